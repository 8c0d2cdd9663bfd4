//! The one-command AWS stack and the packages, checked offline (no AWS credentials, no
//! network): `cfn-lint` passes on cross/aws/wsgate.yaml; the flags it gives an instance, for
//! every load balancer type and every allowed idle timeout and drain time, pass the gateway's
//! own parser (`wsgate --check`) and keep the timing rules; the user data's `DESTDIR` dry run
//! installs the kit; and the `.deb` and `.rpm` hold the binary (of the right architecture),
//! the unit, the sysctl file and the env file (a conffile), and the packaged unit passes
//! `systemd-analyze verify`.
//!
//! The packages are the ones `make deb rpm` built when `WSGATE_PKG_DIR` names their folder
//! (`make test` does, for both architectures); otherwise the test builds them with
//! cross/pkg.sh from this build's binary, for this machine's architecture.
mod common;
use common::{require_program, tests_dir, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_template_passes_cfn_lint() {
    let lint = require_program("cfn-lint");
    let out = run(Command::new(lint).arg(root().join("cross/aws/wsgate.yaml")));
    assert_eq!(text(&out), "", "no findings at all, warnings included");
}

/// A flag's duration in seconds (`25s`, `2m`).
fn secs(flags: &str, flag: &str) -> u64 {
    let v = flags
        .split(' ')
        .skip_while(|w| *w != flag)
        .nth(1)
        .unwrap_or_else(|| panic!("{flag} missing in {flags}"));
    let n: u64 = v.trim_end_matches(['s', 'm']).parse().unwrap();
    if v.ends_with('m') {
        n * 60
    } else {
        n
    }
}

/// The timing rules the template's mappings promise, for one rendered instance.
fn timing_rules(idle: u64, drain: u64, flags: &str, stop: u64) -> Result<(), String> {
    let ping = secs(flags, "--ping-interval");
    let (delay, shutdown) = (
        secs(flags, "--drain-delay"),
        secs(flags, "--shutdown-timeout"),
    );
    if ping * 2 > idle {
        return Err(format!(
            "ping {ping}s is not well inside the idle timeout {idle}s"
        ));
    }
    if delay + shutdown >= drain {
        return Err(format!(
            "drain {delay}s + shutdown {shutdown}s does not fit in {drain}s"
        ));
    }
    if stop <= delay + shutdown {
        return Err(format!(
            "TimeoutStopSec {stop} <= drain {delay}s + shutdown {shutdown}s"
        ));
    }
    Ok(())
}

#[test]
fn the_flags_of_every_stack_are_valid_and_keep_the_timing_rules() {
    require_program("cfn-lint"); // its decoder reads the template
    let python = require_program("python3");
    let out = run(Command::new(python)
        .arg(tests_dir().join("clients/render_stack.py"))
        .arg(root().join("cross/aws/wsgate.yaml")));
    let rows: Vec<String> = text(&out).lines().map(str::to_owned).collect();
    // Two load balancer types x 4 idle timeouts x 3 drain times x with and without extras.
    assert_eq!(rows.len(), 48, "{rows:?}");
    let key = TempDir::new("deploy-key");
    let key_file = key.path().join("jwt.key");
    std::fs::write(&key_file, "a test key\n").unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows {
        let field = |k: &str| common::json_field(row, k).unwrap_or_else(|| panic!("{k}: {row}"));
        let num = |k: &str| field(k).parse::<u64>().unwrap();
        let flags = field("flags").replace("/etc/wsgate/jwt.key", key_file.to_str().unwrap());
        seen.insert(field("lb").to_owned());
        timing_rules(num("idle_s"), num("drain_s"), &flags, num("timeout_stop_s"))
            .unwrap_or_else(|e| panic!("{e}: {row}"));
        // The gateway's own parser and validation take them.
        let out = run(Command::new(common::binary())
            .arg("--check")
            .args(flags.split(' ')));
        assert!(
            text(&out).ends_with("wsgate: the flags are valid\n"),
            "{row}"
        );
        assert!(flags.contains("--proxy-protocol required"), "{row}");
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["CLB", "NLB"]);
}

#[test]
fn the_timing_rules_refuse_a_stack_that_breaks_them() {
    let ok = "--ping-interval 25s --drain-delay 280s --shutdown-timeout 10s";
    assert_eq!(timing_rules(60, 300, ok, 330), Ok(()));
    assert!(
        timing_rules(40, 300, ok, 330).is_err(),
        "ping not inside the idle timeout"
    );
    assert!(
        timing_rules(60, 290, ok, 330).is_err(),
        "drain does not fit"
    );
    assert!(
        timing_rules(60, 300, ok, 290).is_err(),
        "systemd would kill the drain"
    );
}

/// A `make dist`-shaped tarball of this build, named for this machine's architecture.
fn fake_release(dir: &Path) -> String {
    let triple = match std::env::consts::ARCH {
        "aarch64" => "aarch64-unknown-linux-musl",
        _ => "x86_64-unknown-linux-musl",
    };
    let name = format!("wsgate-0.1.0-{triple}");
    let src = dir.join(&name);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(common::binary(), src.join("wsgate")).unwrap();
    for f in [
        "wsgate.service",
        "sysctl-wsgate.conf",
        "wsgate.env",
        "user-data.sh",
    ] {
        std::fs::copy(root().join("cross").join(f), src.join(f)).unwrap();
    }
    run(Command::new("tar")
        .current_dir(dir)
        .args(["czf", &format!("{name}.tar.gz"), &name]));
    let sum = run(Command::new("sha256sum")
        .current_dir(dir)
        .arg(format!("{name}.tar.gz")));
    std::fs::write(dir.join(format!("{name}.tar.gz.sha256")), sum.stdout).unwrap();
    name
}

#[test]
fn the_user_data_dry_run_installs_the_kit_under_destdir() {
    let release = TempDir::new("deploy-release");
    fake_release(release.path());
    let dest = TempDir::new("deploy-dest");
    let user_data = |dest: &Path| {
        run(Command::new("bash")
            .arg(root().join("cross/user-data.sh"))
            .env("WSGATE_URL", format!("file://{}", release.path().display()))
            .env("DESTDIR", dest))
    };
    let out = user_data(dest.path());
    assert!(text(&out).contains("user, sysctl and systemd steps skipped"));
    for f in [
        "usr/local/bin/wsgate",
        "etc/systemd/system/wsgate.service",
        "etc/sysctl.d/60-wsgate.conf",
        "etc/wsgate/wsgate.env",
    ] {
        assert!(dest.path().join(f).is_file(), "{f} missing");
    }
    // Flags written before it ran (the stack writes them first) are kept.
    let env = dest.path().join("etc/wsgate/wsgate.env");
    std::fs::write(&env, "WSGATE_FLAGS=--listen 0.0.0.0:81\n").unwrap();
    user_data(dest.path());
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "WSGATE_FLAGS=--listen 0.0.0.0:81\n"
    );
    // The kit's default flags pass the parser, and the unit reads them.
    let default = std::fs::read_to_string(root().join("cross/wsgate.env")).unwrap();
    let flags = default
        .lines()
        .find_map(|l| l.strip_prefix("WSGATE_FLAGS="))
        .unwrap();
    run(Command::new(common::binary())
        .arg("--check")
        .args(flags.split(' ')));
    let unit = std::fs::read_to_string(root().join("cross/wsgate.service")).unwrap();
    assert!(unit.contains("EnvironmentFile=-/etc/wsgate/wsgate.env"));
    assert!(unit.contains("ExecStart=/usr/local/bin/wsgate $WSGATE_FLAGS"));
}

/// The packages to inspect: `WSGATE_PKG_DIR`'s, or a fresh pair for this machine.
fn packages(scratch: &Path) -> (PathBuf, Vec<&'static str>) {
    if let Ok(dir) = std::env::var("WSGATE_PKG_DIR") {
        return (PathBuf::from(dir), vec!["aarch64", "x86_64"]);
    }
    let arch = match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    };
    require_program("rpmbuild");
    run(Command::new(root().join("cross/pkg.sh"))
        .args([arch, &common::binary()])
        .arg(scratch));
    (scratch.to_path_buf(), vec![arch])
}

/// The ELF machine of a binary: `aarch64` or `x86_64`.
fn elf_machine(path: &Path) -> &'static str {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..4], b"\x7fELF", "{} is not an ELF file", path.display());
    match u16::from_le_bytes([b[18], b[19]]) {
        0xB7 => "aarch64",
        0x3E => "x86_64",
        m => panic!("machine {m:#x}"),
    }
}

const PACKAGED: [&str; 4] = [
    "/usr/bin/wsgate",
    "/usr/lib/systemd/system/wsgate.service",
    "/usr/lib/sysctl.d/60-wsgate.conf",
    "/etc/wsgate/wsgate.env",
];

#[test]
fn the_deb_and_rpm_hold_the_kit_for_their_architecture_and_the_unit_verifies() {
    require_program("dpkg-deb");
    require_program("rpm");
    let analyze = require_program("systemd-analyze");
    let scratch = TempDir::new("deploy-pkg");
    let (dir, arches) = packages(scratch.path());
    for arch in arches {
        let deb_arch = if arch == "aarch64" { "arm64" } else { "amd64" };
        let deb = dir.join(format!("wsgate_0.1.0_{deb_arch}.deb"));
        let rpm = dir.join(format!("wsgate-0.1.0-1.{arch}.rpm"));
        // deb: the files, the architecture, the conffile, the scripts.
        let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
        for f in PACKAGED {
            assert!(
                listing.contains(&format!(".{f}\n")),
                "{f} not in {}",
                deb.display()
            );
        }
        let field = |f: &str| text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f)));
        assert_eq!(field("Architecture").trim(), deb_arch);
        let info = scratch.path().join(format!("control-{arch}"));
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&info));
        let conffiles = std::fs::read_to_string(info.join("conffiles")).unwrap();
        assert_eq!(conffiles, "/etc/wsgate/wsgate.env\n");
        let postinst = std::fs::read_to_string(info.join("postinst")).unwrap();
        assert!(postinst.contains("useradd --system"), "{postinst}");
        assert!(
            postinst.contains("systemctl try-restart wsgate.service"),
            "{postinst}"
        );
        // rpm: the same files, its architecture, the env file kept on upgrade.
        let files = text(&run(Command::new("rpm").arg("-qlp").arg(&rpm)));
        let mut want: Vec<&str> = PACKAGED.into();
        want.push("/etc/wsgate");
        want.sort();
        let mut got: Vec<&str> = files.lines().collect();
        got.sort();
        assert_eq!(got, want, "{}", rpm.display());
        let q = |fmt: &str| {
            text(&run(Command::new("rpm")
                .args(["-qp", "--qf", fmt])
                .arg(&rpm)))
        };
        assert_eq!(q("%{ARCH}"), arch);
        let config = text(&run(Command::new("rpm")
            .args(["-qp", "--configfiles"])
            .arg(&rpm)));
        assert_eq!(config, "/etc/wsgate/wsgate.env\n");
        let scripts = text(&run(Command::new("rpm")
            .args(["-qp", "--scripts"])
            .arg(&rpm)));
        assert!(scripts.contains("try-restart wsgate.service"), "{scripts}");
        // Installed into a throwaway root: the binary is this architecture's, and the unit
        // (with the system's targets beside it) passes systemd-analyze verify there.
        let root_dir = scratch.path().join(format!("root-{arch}"));
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root_dir));
        assert_eq!(elf_machine(&root_dir.join("usr/bin/wsgate")), arch);
        let units = root_dir.join("usr/lib/systemd/system");
        for e in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".target") || name.ends_with(".slice") {
                let _ = std::fs::copy(&p, units.join(&name));
            }
        }
        let unit = std::fs::read_to_string(units.join("wsgate.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/bin/wsgate $WSGATE_FLAGS"),
            "{unit}"
        );
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root_dir.display()))
            .arg("/usr/lib/systemd/system/wsgate.service")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify ({arch}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

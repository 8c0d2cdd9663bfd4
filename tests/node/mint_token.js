// Mints a JSON Web Token with npm's `jsonwebtoken` (a third-party signer, so that the
// gateway's verifier is tested against tokens it did not make), for tests/auth.rs.
//
//   node mint_token.js SECRET CLAIMS_JSON [ALGORITHM]
//
// CLAIMS_JSON is the payload as is (`exp` included when the test wants one; `noTimestamp`
// keeps `iat` out). ALGORITHM defaults to HS256; `none` makes an unsigned token. Prints the
// token on stdout.
'use strict';
const jwt = require('jsonwebtoken');

const [secret, claimsJson, algorithm = 'HS256'] = process.argv.slice(2);
const claims = JSON.parse(claimsJson);
const key = algorithm === 'none' ? undefined : secret;
process.stdout.write(jwt.sign(claims, key, { algorithm, noTimestamp: true }) + '\n');

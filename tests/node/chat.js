// A real third-party client against wsgate: Node's `ws` package.
//
// Usage: node chat.js chat|oversize ws://127.0.0.1:PORT/ws/ROOM
//
// Connects two clients, prints `ready`, and waits for a line on stdin (the test sends `go`
// once wsgate has logged both opens, so no message races a join). Then:
//   chat:     a sends text, b sends binary; both clients receive both (sender included,
//             same opcode, same bytes); both close with 1000.
//   oversize: a sends a 2 KiB message (the server runs with --max-message-bytes 1KiB) and must
//             get Close 1009; b is untouched and still receives its own next message.
// Prints `ok ...` and exits 0, or `FAIL: ...` and exits 1. Every wait is bounded.
"use strict";

let WebSocket;
try {
  WebSocket = require("ws");
} catch (e) {
  console.log(`FAIL: node package ws is missing (${e.code}): run \`make test-deps\``);
  process.exit(1);
}
const readline = require("node:readline");

const WAIT_MS = 10000;
const [mode, url] = process.argv.slice(2);

function withTimeout(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A client whose incoming messages and close are queued, so that nothing is missed.
function open(name) {
  const ws = new WebSocket(url);
  const inbox = [];
  const waiters = [];
  let closed = null;
  const closeWaiters = [];
  ws.on("message", (data, isBinary) => {
    const m = { data, isBinary };
    if (waiters.length) waiters.shift()(m);
    else inbox.push(m);
  });
  ws.on("close", (code, reason) => {
    closed = { code, reason: reason.toString() };
    closeWaiters.splice(0).forEach((w) => w(closed));
  });
  ws.on("error", () => {}); // reported through close / timeouts
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", (e) => reject(new Error(`client ${name}: ${e.message}`)));
    }),
    `client ${name} handshake`,
  ).then(() => ({
    name,
    ws,
    next: () =>
      withTimeout(
        inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => waiters.push(r)),
        `client ${name} message`,
      ),
    closed: () =>
      withTimeout(
        closed ? Promise.resolve(closed) : new Promise((r) => closeWaiters.push(r)),
        `client ${name} close`,
      ),
  }));
}

function go() {
  console.log("ready");
  const rl = readline.createInterface({ input: process.stdin });
  return withTimeout(
    new Promise((resolve) => rl.once("line", (l) => (rl.close(), resolve(l.trim())))),
    "go on stdin",
    60000,
  ).then((l) => {
    if (l !== "go") throw new Error(`expected go on stdin, got ${JSON.stringify(l)}`);
  });
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

async function expectMessage(c, data, isBinary) {
  const m = await c.next();
  expect(m.isBinary === isBinary, `client ${c.name}: binary=${m.isBinary}, expected ${isBinary}`);
  expect(Buffer.compare(m.data, Buffer.from(data)) === 0, `client ${c.name}: wrong bytes`);
}

async function chat() {
  const a = await open("a");
  const b = await open("b");
  await go();
  const text = "hello from node ws ✓";
  a.ws.send(text);
  for (const c of [a, b]) await expectMessage(c, text, false);
  const blob = Buffer.alloc(1000, 0).map((_, i) => i % 256);
  b.ws.send(blob);
  for (const c of [a, b]) await expectMessage(c, blob, true);
  a.ws.close(1000, "bye");
  b.ws.close(1000, "bye");
  const codes = [];
  for (const c of [a, b]) codes.push((await c.closed()).code);
  expect(codes.every((c) => c === 1000), `close codes ${codes}, expected 1000`);
  return `ok node ws text=${text.length} chars binary=${blob.length} bytes close=${codes}`;
}

async function oversize() {
  const a = await open("a");
  const b = await open("b");
  await go();
  a.ws.send("x".repeat(2048));
  const { code, reason } = await a.closed();
  expect(code === 1009, `client a: close code ${code} (${reason}), expected 1009`);
  // b saw nothing of it and is still served.
  b.ws.send("still here");
  await expectMessage(b, "still here", false);
  b.ws.close(1000);
  await b.closed();
  return `ok node ws oversize close=${code} reason=${JSON.stringify(reason)}`;
}

const modes = { chat, oversize };
if (!modes[mode] || !url) {
  console.error("usage: node chat.js chat|oversize ws://127.0.0.1:PORT/ws/ROOM");
  process.exit(2);
}
withTimeout(modes[mode](), mode, 120000).then(
  (line) => {
    console.log(line);
    process.exit(0);
  },
  (e) => {
    console.log(`FAIL: ${e.message}`);
    process.exit(1);
  },
);

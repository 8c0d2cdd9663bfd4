// Two headless Chromium pages chat through wsgate's embedded page, driven by playwright-core.
//
// Usage: node browser_chat.js http://127.0.0.1:PORT/ [chat|reconnect]
// Environment: CHROMIUM (the browser executable, default /usr/bin/chromium), PROFILE_DIR (a
// fresh, empty user data dir that the caller removes), SCREENSHOT (a .png path, optional).
//
// Both pages open the chat page and wait for #state to read "open"; then it prints `ready` and
// waits for a line on stdin (the test sends `go` once wsgate has logged both opens, so no
// message races a join). Page 1 types a message and presses Enter; the message must appear in
// #messages on both pages. In `reconnect` mode the test stops the gateway after `go`; both
// pages must show a "disconnected" notice, then the script prints `closed`, the test starts
// the gateway again on the same address and sends `go` once more, and both pages must be open
// again and chat. The pages must raise no script error and load nothing from any other origin. Prints `ok ...` and exits 0, or `FAIL: ...` and exits 1. Every wait is bounded;
// Playwright never downloads a browser (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, executablePath).
"use strict";

process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = "1";
let chromium;
try {
  ({ chromium } = require("playwright-core"));
} catch (e) {
  console.log(`FAIL: node package playwright-core is missing (${e.code}): run \`make test-deps\``);
  process.exit(1);
}
const readline = require("node:readline");

const WAIT_MS = 15000;
const url = process.argv[2];
const mode = process.argv[3] || "chat";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = process.env.PROFILE_DIR;
const screenshot = process.env.SCREENSHOT;

function withTimeout(promise, what, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Prints `prompt` and waits for `go` on stdin.
function go(prompt = "ready") {
  console.log(prompt);
  const rl = readline.createInterface({ input: process.stdin });
  return withTimeout(
    new Promise((resolve) => rl.once("line", (l) => (rl.close(), resolve(l.trim())))),
    "go on stdin",
    60000,
  ).then((l) => {
    if (l !== "go") throw new Error(`expected go on stdin, got ${JSON.stringify(l)}`);
  });
}

async function openPages(context, origin, problems) {
  const pages = [];
  for (const name of ["page 1", "page 2"]) {
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("pageerror", (e) => problems.push(`${name}: script error: ${e.message}`));
    page.on("console", (m) => {
      // The browser's own favicon probe 404s, and a refused reconnect is expected while the
      // gateway is down: neither is the page's fault.
      const text = m.text();
      if (m.type() === "error" && !/favicon|ERR_CONNECTION_REFUSED/.test(text + (m.location().url || ""))) {
        problems.push(`${name}: console error: ${text}`);
      }
    });
    page.on("request", (r) => {
      if (!r.url().startsWith(origin + "/")) problems.push(`${name}: request to ${r.url()}`);
    });
    const resp = await page.goto(url, { waitUntil: "load" });
    if (!resp || resp.status() !== 200) throw new Error(`${name}: GET ${url} gave ${resp && resp.status()}`);
    await waitState(page, name, "open");
    pages.push(page);
  }
  return pages;
}

function waitState(page, name, state) {
  return page
    .waitForFunction((s) => document.querySelector("#state").textContent === s, state)
    .catch((e) => {
      throw new Error(`${name}: #state never read ${JSON.stringify(state)} (${e.message})`);
    });
}

// Page 1 types `text` and presses Enter; it must appear in #messages on every page.
async function chatOnce(pages, text) {
  await pages[0].fill("#input", text);
  await pages[0].press("#input", "Enter");
  for (const [i, page] of pages.entries()) {
    await page
      .waitForFunction(
        (t) => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === t),
        text,
      )
      .catch((e) => {
        throw new Error(`page ${i + 1}: message never appeared in #messages (${e.message})`);
      });
  }
  const left = await pages[0].inputValue("#input");
  if (left !== "") throw new Error(`page 1: #input not cleared after sending: ${JSON.stringify(left)}`);
}

async function chat(context, origin, problems) {
  const pages = await openPages(context, origin, problems);
  await go();
  await chatOnce(pages, `hello from chromium ${Date.now()} ✓`);
  return pages;
}

// The gateway goes away after `go` and comes back on the same address before the second `go`:
// both pages show the disconnect, reconnect on their own, and chat again.
async function reconnect(context, origin, problems) {
  const pages = await openPages(context, origin, problems);
  await go();
  for (const [i, page] of pages.entries()) {
    await page
      .waitForFunction(() =>
        [...document.querySelectorAll("#messages li.system")].some((li) =>
          li.textContent.startsWith("disconnected"),
        ),
      )
      .catch((e) => {
        throw new Error(`page ${i + 1}: no "disconnected" notice (${e.message})`);
      });
  }
  await go("closed");
  for (const [i, page] of pages.entries()) await waitState(page, `page ${i + 1}`, "open");
  await chatOnce(pages, `back again ${Date.now()} ✓`);
  return pages;
}

async function run(context) {
  const origin = new URL(url).origin;
  const problems = [];
  const pages = await { chat, reconnect }[mode](context, origin, problems);
  const counts = [];
  for (const page of pages) counts.push(await page.locator("#messages li").count());
  if (screenshot) await pages[0].screenshot({ path: screenshot });
  if (problems.length) throw new Error(problems.join("; "));
  return `ok chromium ${mode} messages=${counts}`;
}

async function main() {
  if (!url || !profile || !["chat", "reconnect"].includes(mode)) {
    console.error("usage: PROFILE_DIR=DIR node browser_chat.js http://127.0.0.1:PORT/ [chat|reconnect]");
    process.exit(2);
  }
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    timeout: 60000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    return await run(context);
  } finally {
    await withTimeout(context.close(), "closing the browser", WAIT_MS).catch(() => {});
  }
}

withTimeout(main(), "browser chat", 150000).then(
  (line) => {
    console.log(line);
    process.exit(0);
  },
  (e) => {
    console.log(`FAIL: ${e.message.split("\n")[0]}`);
    process.exit(1);
  },
);

// Two headless Chromium pages chat through wsgate's embedded page, driven by playwright-core.
//
// Usage: node browser_chat.js http://127.0.0.1:PORT/
// Environment: CHROMIUM (the browser executable, default /usr/bin/chromium), PROFILE_DIR (a
// fresh, empty user data dir that the caller removes), SCREENSHOT (a .png path, optional).
//
// Both pages open the chat page and wait for #state to read "open"; then it prints `ready` and
// waits for a line on stdin (the test sends `go` once wsgate has logged both opens, so no
// message races a join). Page 1 types a message and presses Enter; the message must appear in
// #messages on both pages. The pages must raise no script error and load nothing from any
// other origin. Prints `ok ...` and exits 0, or `FAIL: ...` and exits 1. Every wait is bounded;
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

async function run(context) {
  const origin = new URL(url).origin;
  const problems = [];
  const pages = [];
  for (const name of ["page 1", "page 2"]) {
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on("pageerror", (e) => problems.push(`${name}: script error: ${e.message}`));
    page.on("console", (m) => {
      // The browser's own favicon probe 404s: that is not the page's doing.
      if (m.type() === "error" && !/favicon/.test(m.location().url || "")) {
        problems.push(`${name}: console error: ${m.text()}`);
      }
    });
    page.on("request", (r) => {
      if (!r.url().startsWith(origin + "/")) problems.push(`${name}: request to ${r.url()}`);
    });
    const resp = await page.goto(url, { waitUntil: "load" });
    if (!resp || resp.status() !== 200) throw new Error(`${name}: GET ${url} gave ${resp && resp.status()}`);
    await page.waitForFunction(() => document.querySelector("#state").textContent === "open");
    pages.push(page);
  }
  await go();

  const text = `hello from chromium ${Date.now()} ✓`;
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
  const counts = [];
  for (const page of pages) counts.push(await page.locator("#messages li").count());
  if (screenshot) await pages[0].screenshot({ path: screenshot });
  if (problems.length) throw new Error(problems.join("; "));
  return `ok chromium ${context.browser() ? context.browser().version() : ""} messages=${counts}`;
}

async function main() {
  if (!url || !profile) {
    console.error("usage: PROFILE_DIR=DIR node browser_chat.js http://127.0.0.1:PORT/");
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

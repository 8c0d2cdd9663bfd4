// Two headless Chromium pages on a Socket.IO chat page (the one `wsgate --static` serves, or the
// classic app's own through `--upstream`), driven line by line by tests/browser_sio.rs and
// tests/upstream.rs (same protocol as sio_driver.js).
//
//   node sio_browser.js PAGE_URL
//
// Uses the system Chromium (/usr/bin/chromium) through playwright-core; never downloads a
// browser. A fresh user-data-dir is made and removed. Output, one line each, `TYPE JSON`:
//   ready {"pages":N}          every page's socket is connected
//   seen {"text":..}           every page shows the message
//   messages {"page":i,"items":[..]}
//   page_error {"page":i,"message":..}   an uncaught error or console error in a page
// Input, one JSON command a line:
//   {"op":"send","page":i,"text":..}   type into page i's form and submit; then `seen`
//   {"op":"expect","text":..}          wait until every page shows it; then `seen`
//   {"op":"messages"}                  one `messages` line per page
// End of input closes the browser and ends the process.
'use strict';
process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const PAGES = 2;
// Below the Rust side's 10 s wait, so a timeout here is reported with its stack.
const TIMEOUT_MS = 8000;
const [pageUrl] = process.argv.slice(2);
const out = (type, o) => process.stdout.write(`${type} ${JSON.stringify(o || {})}\n`);

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgate-chromium-'));
  let context;
  const cleanup = async () => {
    if (context) await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    context.setDefaultTimeout(TIMEOUT_MS);
    const pages = [];
    for (let i = 0; i < PAGES; i++) {
      const page = i === 0 && context.pages().length ? context.pages()[0] : await context.newPage();
      page.on('pageerror', (e) => out('page_error', { page: i, message: String(e) }));
      page.on('console', (m) => {
        // The browser's own /favicon.ico request gets wsgate's 404: not the page's error.
        const favicon = (m.location().url || '').endsWith('/favicon.ico');
        if (m.type() === 'error' && !favicon) out('page_error', { page: i, message: m.text() });
      });
      await page.goto(pageUrl);
      // `socket` may be a `var` (a window property) or, as in the app's own page, a top-level
      // `const` (a global binding only): both are visible by name.
      // eslint-disable-next-line no-undef
      await page.waitForFunction(() => typeof socket !== 'undefined' && socket.connected);
      pages.push(page);
    }
    out('ready', { pages: pages.length });

    const items = (page) => page.$$eval('#messages > li', (lis) => lis.map((li) => li.textContent));
    const seenEverywhere = async (text) => {
      for (const page of pages) {
        await page.waitForFunction(
          (t) => [...document.querySelectorAll('#messages > li')].some((li) => li.textContent === t),
          text,
        );
      }
      out('seen', { text });
    };

    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
      const c = JSON.parse(line);
      if (c.op === 'send') {
        const page = pages[c.page];
        await page.fill('#input', c.text);
        await page.press('#input', 'Enter');
        await seenEverywhere(c.text);
      } else if (c.op === 'expect') {
        await seenEverywhere(c.text);
      } else if (c.op === 'messages') {
        for (let i = 0; i < pages.length; i++) out('messages', { page: i, items: await items(pages[i]) });
      } else {
        throw new Error(`unknown op ${c.op}`);
      }
    }
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  },
);

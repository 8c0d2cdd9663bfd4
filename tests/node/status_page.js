// The admin status page in headless Chromium (the system /usr/bin/chromium, through
// playwright-core; never a downloaded browser), driven line by line by tests/status_page.rs.
//
//   node status_page.js URL
//
// Output, one line each, `TYPE JSON`:
//   login {}                 the page asks for the API key
//   numbers {"open":..,"polling":..,"rooms":..,"messages_in":..,"rate_in":..,"rate_out":..,
//            "top":[[room, members], ...],"backplane":..,"settings":N}
//   shot {"path":..}         a screenshot was written
//   page_error {"message":..}
// Input, one JSON command a line:
//   {"op":"key","key":..}    type the key into the page's form and submit
//   {"op":"read"}            the numbers as the page shows them now
//   {"op":"until","open":N,"messages_in":M}  wait until the page shows at least these
//   {"op":"shot","path":..}  full-page screenshot (PNG)
// End of input closes the browser and ends the process.
'use strict';
process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';
const { chromium } = require('playwright-core');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const [url] = process.argv.slice(2);
const out = (type, o) => process.stdout.write(`${type} ${JSON.stringify(o || {})}\n`);
const num = (s) => Number(String(s).replace(/,/g, '')) || 0;

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsgate-status-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 900 },
  });
  context.setDefaultTimeout(8000);
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => out('page_error', { message: String(e) }));
  await page.goto(url);
  await page.waitForFunction(() =>
    document.getElementById('login').style.display === 'block' ||
    document.getElementById('open').textContent !== '-');
  if (await page.isVisible('#login')) out('login');
  const read = () => page.evaluate(() => {
    const t = (id) => document.getElementById(id).textContent;
    const top = [...document.querySelectorAll('#top-rooms tr')].map((tr) =>
      [...tr.children].map((td) => td.textContent));
    return { open: t('open'), polling: t('polling'), rooms: t('rooms'), messages_in: t('messages-in'),
      rate_in: t('rate-in'), rate_out: t('rate-out'), top, backplane: t('backplane'),
      settings: document.querySelectorAll('#settings tr').length };
  });
  const numbers = async () => {
    const n = await read();
    for (const k of ['open', 'polling', 'rooms', 'messages_in', 'rate_in', 'rate_out']) n[k] = num(n[k]);
    n.top = n.top.map(([r, m]) => [r, num(m)]);
    return n;
  };
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const c = JSON.parse(line);
    if (c.op === 'key') {
      await page.fill('#key', c.key);
      await page.click('#login button');
      await page.waitForFunction(() => document.getElementById('open').textContent !== '-');
      out('numbers', await numbers());
    } else if (c.op === 'read') {
      out('numbers', await numbers());
    } else if (c.op === 'until') {
      const deadline = Date.now() + 8000;
      let n = await numbers();
      while ((n.open < c.open || n.messages_in < c.messages_in) && Date.now() < deadline) {
        await page.waitForTimeout(200);
        n = await numbers();
      }
      out('numbers', n);
    } else if (c.op === 'shot') {
      await page.screenshot({ path: c.path, fullPage: true });
      out('shot', { path: c.path });
    }
  }
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

main().catch((e) => {
  out('page_error', { message: String(e && e.stack || e) });
  process.exit(1);
});

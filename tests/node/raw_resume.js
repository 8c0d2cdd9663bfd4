// A raw client's resume with Node `ws` (tests/recovery.rs): a subscriber asks for the
// `wsgate.offset` subprotocol, reads `{"offset":..,"recovered":..}` then `<offset> <message>`
// frames; it goes away, two messages are published meanwhile, and it comes back with
// `?since=<the last offset it saw>`: recovered, each missed message once, then live.
//
//   node raw_resume.js ws://HOST:PORT     prints `ok replayed=.. live=..` or `fail ..`
'use strict';
const WebSocket = require('ws');
const base = process.argv[2];
const room = 'resume-node';

const fail = (why) => {
  console.log(`fail ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timeout'), 20000).unref();

// Opens a socket and resolves with it and a queue of its text frames.
const open = (url, protocols) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const queue = [];
    let waiter = null;
    ws.on('message', (data) => {
      queue.push(data.toString());
      const w = waiter;
      waiter = null;
      if (w) w();
    });
    ws.on('error', reject);
    ws.on('open', () => resolve({ ws, next: () => next(queue, (w) => (waiter = w)) }));
  });
const next = (queue, setWaiter) =>
  new Promise((resolve) => {
    const take = () => {
      if (queue.length) return resolve(queue.shift());
      setWaiter(take);
    };
    take();
  });

(async () => {
  const pub = await open(`${base}/ws/${room}`);
  const sub = await open(`${base}/ws/${room}`, ['wsgate.offset']);
  if (sub.ws.protocol !== 'wsgate.offset') fail(`protocol ${sub.ws.protocol}`);
  const first = JSON.parse(await sub.next());
  if (first.recovered !== false || typeof first.offset !== 'string') fail(`first ${JSON.stringify(first)}`);
  let last = first.offset;
  for (const m of ['r1', 'r2']) {
    pub.ws.send(m);
    await pub.next();
    const got = await sub.next();
    const [offset, text] = [got.slice(0, got.indexOf(' ')), got.slice(got.indexOf(' ') + 1)];
    if (text !== m) fail(`got ${got}`);
    last = offset;
  }
  sub.ws.close();
  for (const m of ['r3', 'r4']) {
    pub.ws.send(m);
    await pub.next();
  }
  // A browser keeps `last` in sessionStorage and passes it back as ?since=.
  const back = await open(`${base}/ws/${room}?since=${encodeURIComponent(last)}`, ['wsgate.offset']);
  const again = JSON.parse(await back.next());
  if (again.recovered !== true) fail(`again ${JSON.stringify(again)}`);
  const replayed = [await back.next(), await back.next()].map((f) => f.slice(f.indexOf(' ') + 1));
  pub.ws.send('r5');
  const live = (await back.next()).split(' ')[1];
  // An offset from before a restart (another epoch) is refused whole: recovered false.
  const stale = await open(`${base}/ws/${room}?since=1-1`, ['wsgate.offset']);
  const refused = JSON.parse(await stale.next());
  if (refused.recovered !== false) fail(`stale ${JSON.stringify(refused)}`);
  console.log(`ok replayed=${replayed.join(',')} live=${live}`);
  process.exit(0);
})().catch((e) => fail(e.message));

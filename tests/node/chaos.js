// The clients of the chaos test (tests/chaos.rs): stock socket.io-client on both transports
// and raw `ws` clients with `wsgate.offset` resume, all in one room behind a load balancer,
// and one publisher of numbered messages. The test kills, drains and restarts the instances
// and cuts connections meanwhile; every client reconnects on its own.
//
//   node chaos.js http://HOST:PORT ROOM
//   prints `ready` once every client is connected (the publisher starts then), and on a
//   `stop` line from stdin stops publishing, waits until every client is connected and
//   quiet, and prints one JSON line: {"published":N,"clients":[{name,got,reconnects,
//   recovered,failures}]}
'use strict';
const { io } = require('socket.io-client');
const WebSocket = require('ws');
const readline = require('readline');
const [base, room] = process.argv.slice(2);
const wsBase = base.replace(/^http/, 'ws');

const clients = [];
const log = (...a) => console.error(new Date().toISOString(), ...a);
const num = (text) => (typeof text === 'string' && /^m\d+$/.test(text) ? Number(text.slice(1)) : null);

// A stock Socket.IO client; `transports` as a user would set them.
const sio = (name, transports) => {
  const c = { name, got: [], reconnects: 0, recovered: 0, failures: [], connected: false, last: Date.now() };
  const socket = io(base, {
    transports,
    query: { room },
    reconnectionDelay: 100,
    reconnectionDelayMax: 400,
    randomizationFactor: 0,
    timeout: 3000,
  });
  let before = false;
  socket.on('connect', () => {
    c.connected = true;
    if (before) {
      c.reconnects += 1;
      if (socket.recovered) c.recovered += 1;
      else c.failures.push(`not recovered at reconnect ${c.reconnects}`);
    }
    before = true;
    log(name, 'connect', socket.recovered, socket.io.engine.transport.name);
  });
  socket.on('disconnect', (why) => {
    c.connected = false;
    log(name, 'disconnect', why);
  });
  socket.on('chat message', (text) => {
    const n = num(text);
    if (n !== null) {
      c.got.push(n);
      c.last = Date.now();
    }
  });
  c.close = () => socket.close();
  clients.push(c);
};

// A raw client: `wsgate.offset`, and on every reconnect `?since=` the last offset it saw.
const raw = (name) => {
  const c = { name, got: [], reconnects: 0, recovered: 0, failures: [], connected: false, last: Date.now() };
  let offset = null;
  let closed = false;
  const connect = () => {
    const url = `${wsBase}/ws/${room}` + (offset ? `?since=${offset}` : '');
    const ws = new WebSocket(url, ['wsgate.offset']);
    let first = true;
    ws.on('message', (data) => {
      const text = data.toString();
      if (first) {
        first = false;
        const f = JSON.parse(text);
        if (offset !== null) {
          c.reconnects += 1;
          if (f.recovered) c.recovered += 1;
          else c.failures.push(`not recovered at reconnect ${c.reconnects} since ${offset}`);
        }
        if (offset === null || !f.recovered) offset = f.offset;
        c.connected = true;
        log(name, 'connect', f.recovered, f.offset);
        return;
      }
      const sp = text.indexOf(' ');
      offset = text.slice(0, sp);
      const n = num(text.slice(sp + 1));
      if (n !== null) {
        c.got.push(n);
        c.last = Date.now();
      }
    });
    ws.on('error', () => {});
    ws.on('close', (code) => {
      c.connected = false;
      log(name, 'close', code);
      if (!closed) setTimeout(connect, 100);
    });
    c.close = () => {
      closed = true;
      ws.close();
    };
  };
  connect();
  clients.push(c);
};

// The publisher: a plain client sending `m<n>` every 20 ms while it is connected. A number
// sent into a connection that dies may be lost for everyone; none is sent twice.
let published = 0;
let publishing = true;
const publisher = () => {
  const ws = new WebSocket(`${wsBase}/ws/${room}`);
  let timer = null;
  ws.on('open', () => {
    timer = setInterval(() => {
      if (!publishing) return;
      published += 1;
      ws.send(`m${published}`);
    }, 20);
  });
  ws.on('error', () => {});
  ws.on('close', () => {
    clearInterval(timer);
    if (publishing) setTimeout(publisher, 100);
  });
};

sio('sio-default-1', ['polling', 'websocket']);
sio('sio-default-2', ['polling', 'websocket']);
sio('sio-websocket-1', ['websocket']);
sio('sio-websocket-2', ['websocket']);
sio('sio-polling', ['polling']);
raw('raw-1');
raw('raw-2');

const allConnected = () => clients.every((c) => c.connected);
const waitFor = (pred, ms) =>
  new Promise((resolve) => {
    const until = Date.now() + ms;
    const tick = () => (pred() || Date.now() > until ? resolve(pred()) : setTimeout(tick, 50));
    tick();
  });

(async () => {
  if (!(await waitFor(allConnected, 10000))) {
    console.log(JSON.stringify({ error: 'not all connected', clients }));
    process.exit(1);
  }
  // Socket.IO clients on polling may still be upgrading; give them a moment.
  await new Promise((r) => setTimeout(r, 500));
  publisher();
  console.log('ready');
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    if (line.trim() !== 'stop') return;
    publishing = false;
    const settled = () => allConnected() && clients.every((c) => Date.now() - c.last > 1500);
    await waitFor(settled, 15000);
    const out = clients.map(({ name, got, reconnects, recovered, failures, connected }) => ({
      name, got, reconnects, recovered, failures, connected,
    }));
    console.log(JSON.stringify({ published, clients: out }));
    clients.forEach((c) => c.close());
    setTimeout(() => process.exit(0), 200);
  });
})();
setTimeout(() => {
  console.log(JSON.stringify({ error: 'timeout' }));
  process.exit(1);
}, 90000).unref();

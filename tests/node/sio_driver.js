// A stock socket.io-client, driven line by line by the Rust tests (tests/sio_common).
//
//   node sio_driver.js URL [OPTIONS_JSON]
//
// Every option the tests do not give is the client's default, except `transports:
// ['websocket']` (what the README tells users to set) and `reconnection: false` (a test
// wants to see a disconnect, not hide it). Output, one line each, `TYPE JSON`:
//   connect {"id":..,"transport":..,"recovered":..}  connect_error {"message":..}
//   upgrade {"transport":..}     (Engine.IO moved from polling to a WebSocket)
//   event {"name":..,"args":[..]}  ack {"id":..,"args":[..]}
//     (an event's trailing offset is left out of `args`, by the client's own rule: with a
//     `pid`, a trailing string is the offset; `offset {}` prints the last one)
//   offset {"offset":..}
//   ping {}                      disconnect {"reason":..}
// Input, one JSON command a line:
//   {"op":"emit","name":..,"args":[..]}           socket.emit(name, ...args)
//   {"op":"emit_ack","id":..,"name":..,"args":[..]}  same, with an ack callback
//   {"op":"chat_many","prefix":..,"n":..}         emit `chat message` `${prefix}${i}`, i < n
//   {"op":"disconnect"}                           socket.disconnect()
//   {"op":"drop"}                                 close the transport, as a cut would: the
//                                                 client reconnects (with reconnection on)
//   {"op":"offset"}                               print the client's last offset
// End of input ends the process.
'use strict';
const { io } = require('socket.io-client');
const readline = require('readline');

const [url, optsJson] = process.argv.slice(2);
const opts = Object.assign(
  { transports: ['websocket'], reconnection: false },
  JSON.parse(optsJson || '{}'),
);
const out = (type, o) => process.stdout.write(`${type} ${JSON.stringify(o || {})}\n`);

const socket = io(url, opts);
socket.on('connect', () =>
  out('connect', {
    id: socket.id,
    transport: socket.io.engine.transport.name,
    recovered: socket.recovered,
  }),
);
socket.io.on('open', () =>
  socket.io.engine.on('upgrade', (t) => out('upgrade', { transport: t.name })),
);
socket.on('connect_error', (e) => out('connect_error', { message: e.message }));
socket.on('disconnect', (reason) => out('disconnect', { reason }));
socket.onAny((name, ...args) => {
  // socket.io-client's own rule (lib/socket.ts emitEvent): with a pid, a trailing string is
  // the offset; listeners get it too, as an extra argument.
  if (socket._pid && args.length && typeof args[args.length - 1] === 'string') args.pop();
  out('event', { name, args });
});
socket.io.on('ping', () => out('ping'));

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const c = JSON.parse(line);
  switch (c.op) {
    case 'emit':
      socket.emit(c.name, ...c.args);
      break;
    case 'emit_ack':
      socket.emit(c.name, ...c.args, (...args) => out('ack', { id: c.id, args }));
      break;
    case 'chat_many':
      for (let i = 0; i < c.n; i++) socket.emit('chat message', `${c.prefix}${i}`);
      break;
    case 'disconnect':
      socket.disconnect();
      break;
    case 'drop':
      socket.io.engine.close();
      break;
    case 'offset':
      out('offset', { offset: socket._lastOffset });
      break;
    default:
      throw new Error(`unknown op ${c.op}`);
  }
});
rl.on('close', () => {
  socket.close();
  process.exit(0);
});

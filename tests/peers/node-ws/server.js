// Lean Node `ws` broadcast server: the "what a Node user would pick" peer for wsgate-load.
// Every text/binary message goes to every client on the same URL path (the room), sender
// included, with the same opcode. With one path in use that is "every message to every client".
// Env: PORT (default 0 = any free port), HOST (default 127.0.0.1).
// Prints `listening port=N` on stdout once bound.
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 0);

/** path -> Set<WebSocket> */
const rooms = new Map();

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404, { 'Content-Type': 'text/plain', Connection: 'close' });
  res.end(req.url === '/healthz' ? 'ok' : 'not found');
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  const path = (req.url || '/').split('?')[0];
  let room = rooms.get(path);
  if (!room) {
    room = new Set();
    rooms.set(path, room);
  }
  room.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const peer of room) {
      if (peer.readyState === WebSocket.OPEN) peer.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    room.delete(ws);
    if (room.size === 0) rooms.delete(path);
  });
  ws.on('error', () => {});
});

server.listen(port, host, () => {
  console.log(`listening port=${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

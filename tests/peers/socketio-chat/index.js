// The classic stack's chat app (the socket.io 4.x tutorial): express serves index.html,
// `io.emit('chat message', msg)` on each message, `socket.broadcast.emit('hi')` on connect.
// A `?room=NAME` query in the handshake joins that room, and then both emits go to the room only.
// Env: PORT (default 0 = any free port), HOST (default 127.0.0.1).
// Prints `listening port=N` on stdout once bound.
'use strict';
const path = require('path');
const http = require('http');
const express = require('express');
const { Server } = require('socket.io');

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 0);

const app = express();
const server = http.createServer(app);
const io = new Server(server);

app.get('/', (req, res) => {
  res.sendFile(path.join(__dirname, 'index.html'));
});
app.get('/healthz', (req, res) => {
  res.type('text/plain').send('ok');
});

io.on('connection', (socket) => {
  const room = typeof socket.handshake.query.room === 'string' ? socket.handshake.query.room : '';
  if (room) {
    socket.join(room);
    socket.to(room).emit('hi');
  } else {
    socket.broadcast.emit('hi');
  }
  socket.on('chat message', (msg) => {
    if (room) {
      io.to(room).emit('chat message', msg);
    } else {
      io.emit('chat message', msg);
    }
  });
});

server.listen(port, host, () => {
  console.log(`listening port=${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

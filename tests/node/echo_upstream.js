// An upstream for the --upstream tests, on Node's own http module (no packages):
//   GET|POST /echo      200, JSON {method, url, headers, body (latin1), bodyLength, peerPort}
//   GET /chunked        200, a chunked body of three parts
//   GET /close-idle     200, then 50 ms later every idle kept-alive connection is closed
//   GET /slow           the head only after 3 s
//   GET /cut            a Content-Length of 100, 10 bytes, then the connection is destroyed
//   GET /ws             a WebSocket upgrade is answered 101 by hand, then every byte is echoed
// Env: PORT (default 0). Prints `listening port=N` once bound.
'use strict';
const http = require('http');
const crypto = require('crypto');

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    switch (req.url.split('?')[0]) {
      case '/echo': {
        const out = JSON.stringify({
          method: req.method,
          url: req.url,
          headers: req.headers,
          body: body.toString('latin1'),
          bodyLength: body.length,
          peerPort: req.socket.remotePort,
        });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
        res.end(out);
        break;
      }
      case '/chunked':
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.write('part one;');
        res.write('part two;');
        res.end('part three');
        break;
      case '/close-idle':
        // Then, a moment later, closes every idle kept-alive connection (this one included).
        res.end('closing idle');
        setTimeout(() => server.closeIdleConnections(), 50);
        break;
      case '/slow':
        setTimeout(() => res.end('late'), 3000);
        break;
      case '/cut':
        res.writeHead(200, { 'Content-Length': '100' });
        res.write('0123456789');
        setTimeout(() => req.socket.destroy(), 100);
        break;
      default:
        res.writeHead(404);
        res.end('no');
    }
  });
});
server.on('upgrade', (req, socket, head) => {
  const key = req.headers['sec-websocket-key'];
  const accept = crypto
    .createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\nX-Seen-Forwarded-For: ${req.headers['x-forwarded-for']}\r\n\r\n`,
  );
  if (head.length) socket.write(head);
  // A tunnel that ends with bytes unread is reset: that ends this socket, not the app.
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening port=${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));

// A Node.js HTTP server with in-memory state, for checkpoint tests:
//   node http_server.mjs LISTEN READYFILE   (LISTEN: a TCP port on 127.0.0.1, or a unix socket path)
// State: 2 000 items built at start, a hit counter. GET /state -> {hits, count, checksum} (and
// counts a hit); POST /item?k=K&v=V adds an item. READYFILE gets "pid=PID\nport=PORT\n" (tmp+rename).
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { renameSync, writeFileSync } from 'node:fs';

const [listen, readyFile] = process.argv.slice(2);
const items = new Map();
for (let i = 0; i < 2000; i++) items.set(`item-${i}`, createHash('sha256').update(String(i)).digest('hex'));
let hits = 0;

function checksum() {
  const h = createHash('sha256');
  for (const [k, v] of [...items].sort(([a], [b]) => (a < b ? -1 : 1))) h.update(`${k}=${v};`);
  return h.digest('hex');
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/state') {
    hits++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ hits, count: items.size, checksum: checksum() }));
  } else if (req.method === 'POST' && url.pathname === '/item') {
    items.set(url.searchParams.get('k'), url.searchParams.get('v'));
    res.end(JSON.stringify({ count: items.size }));
  } else {
    res.statusCode = 404;
    res.end();
  }
});
// Idle keep-alive sockets would be dumped as established connections; close them promptly.
server.keepAliveTimeout = 1;

const onListening = () => {
  const addr = server.address();
  const port = typeof addr === 'string' ? 0 : addr.port;
  writeFileSync(`${readyFile}.tmp`, `pid=${process.pid}\nport=${port}\n`);
  renameSync(`${readyFile}.tmp`, readyFile);
};
if (/^\d+$/.test(listen)) server.listen(Number(listen), '127.0.0.1', onListening);
else server.listen(listen, onListening);

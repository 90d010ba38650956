// Load: 64 concurrent streaming clients against `keel serve` for a bounded
// time. Every stream must end with a finish reason and [DONE], no request may
// fail, and the server's resident memory after the run must stay within a
// fixed margin of its memory after a warm-up round. Prints p50/p99 latency.
// Usage: node serve_load.mjs <keel> <model dir> [seconds=12] [clients=64]
import path from 'node:path';
import { check, metricValue, percentile, rssBytes, startServer, stopServer, streamRequest } from './serve_util.mjs';

const [keel, model, secondsArg, clientsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 6);
const clients = Number(clientsArg || 64);
const id = path.basename(model);
const words = ['The Congress', 'We the people', 'Fellow citizens', 'The union', 'In the year', 'Peace'];

const srv = await startServer(keel, model, ['--http-threads', String(2 * clients + 16), '--max-batch', '16']);
let ok = false;
try {
  const request = (i, k) =>
    streamRequest(srv.base, i % 2 ? '/v1/chat/completions' : '/v1/completions', {
      model: id,
      ...(i % 2
        ? { messages: [{ role: 'user', content: words[(i + k) % words.length] }] }
        : { prompt: words[(i + k) % words.length] }),
      max_tokens: 8,
      temperature: 0.8,
      seed: i * 1000 + k,
    });

  // Warm-up: one full round, so allocator pools and thread stacks exist.
  await Promise.all(Array.from({ length: clients }, (_, i) => request(i, 0)));
  // Finished sequences go into the prefix cache (up to its byte budget): that
  // growth is by design and grows with the requests a machine completes, so
  // it is taken out of the leak check.
  const cacheBytes = async () =>
    metricValue(await (await fetch(`${srv.base}/metrics`)).text(), 'keel_prefix_cache_bytes_in_use');
  const cacheBefore = await cacheBytes();
  const rssBefore = rssBytes(srv.proc.pid);

  const latencies = [];
  const ttfts = [];
  let failures = 0;
  const deadline = performance.now() + seconds * 1000;
  const t0 = performance.now();
  const client = async (i) => {
    for (let k = 1; performance.now() < deadline; k++) {
      try {
        const r = await request(i, k);
        check(r.done, 'stream ended with [DONE]');
        check(r.finish === 'length' || r.finish === 'stop', `finish reason ${r.finish}`);
        latencies.push(r.totalMs);
        if (r.ttftMs !== null) ttfts.push(r.ttftMs);
      } catch (e) {
        failures++;
        console.error(`client ${i} request ${k}: ${e.message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
  const wall = (performance.now() - t0) / 1000;
  const rssAfter = rssBytes(srv.proc.pid);
  const cacheGrowth = (await cacheBytes()) - cacheBefore;

  latencies.sort((a, b) => a - b);
  ttfts.sort((a, b) => a - b);
  const mb = (b) => (b / 2 ** 20).toFixed(1);
  console.log(
    `load: ${clients} concurrent streaming clients for ${wall.toFixed(1)} s: ${latencies.length} requests ` +
      `(${(latencies.length / wall).toFixed(1)} req/s), ${failures} failed`,
  );
  console.log(
    `latency p50 ${percentile(latencies, 50).toFixed(0)} ms, p99 ${percentile(latencies, 99).toFixed(0)} ms; ` +
      `time to first token p50 ${percentile(ttfts, 50).toFixed(0)} ms, p99 ${percentile(ttfts, 99).toFixed(0)} ms`,
  );
  console.log(`server RSS after warm-up ${mb(rssBefore)} MiB, after the run ${mb(rssAfter)} MiB`);

  check(failures === 0, `${failures} requests failed`);
  check(latencies.length >= clients, 'every client completed at least one request');
  // After the warm-up every pool, arena and thread stack exists, so growth is
  // leaks plus allocator noise; the growth per request is printed so that a
  // leak can be sized from the log. (The bound was 64 MiB, which let a leak of
  // several KiB per request through.)
  const growth = rssAfter - rssBefore - Math.max(0, cacheGrowth);
  const perRequest = growth / latencies.length;
  console.log(
    `prefix cache grew by ${mb(cacheGrowth)} MiB; the rest of the RSS growth per request ` +
      `${(perRequest / 1024).toFixed(2)} KiB`,
  );
  check(growth < 16 * 2 ** 20, `RSS grew by ${mb(growth)} MiB beyond the prefix cache's growth`);

  const metrics = await (await fetch(`${srv.base}/metrics`)).text();
  check(metricValue(metrics, 'keel_generation_requests_total') === latencies.length + clients,
    'every request counted once');
  check(metricValue(metrics, 'keel_http_inflight_requests') === 0, 'nothing in flight');
  check(metricValue(metrics, 'keel_queue_length') === 0, 'queue drained');
  check(metricValue(metrics, 'keel_active_sequences') === 0, 'no active sequences');
  check(metricValue(metrics, 'keel_client_disconnects_total') === 0, 'no disconnects');
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('load: all checks passed');

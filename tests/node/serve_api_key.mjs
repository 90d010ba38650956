// `keel serve` with an API key (from $KEEL_API_KEY, so it is not on the
// command line): every route but /health answers 401 with an OpenAI error
// object unless "Authorization: Bearer <key>" carries the key; OpenAI's own
// npm client with the key gets its completion, without it an
// AuthenticationError. Over real sockets.
// Usage: node serve_api_key.mjs <keel> <model dir> <openai package dir>
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, checkErrorObject, rawPost, rawRequest, startServer, stopServer } from './serve_util.mjs';

const [keel, model, openaiDir] = process.argv.slice(2);
const id = path.basename(model);
const key = 'sk-keel-test-0123456789';
process.env.KEEL_API_KEY = key;
const srv = await startServer(keel, model);
delete process.env.KEEL_API_KEY;
let ok = false;
try {
  const get = (p, auth = '') => rawRequest(srv.port, `GET ${p} HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`);
  const health = await get('/health');
  check(health.status === 200, `/health needs no key: ${health.status}`);
  for (const [what, auth] of [['no Authorization', ''], ['wrong key', 'Authorization: Bearer sk-wrong\r\n'],
    ['key without the Bearer scheme', `Authorization: ${key}\r\n`], ['key with a suffix', `Authorization: Bearer ${key}x\r\n`],
    ['a prefix of the key', `Authorization: Bearer ${key.slice(0, -1)}\r\n`]]) {
    const e = checkErrorObject(await get('/v1/models', auth), 401, { code: 'invalid_api_key' }, `/v1/models, ${what}`);
    const p = checkErrorObject(await rawPost(srv.port, '/v1/completions', { model: id, prompt: 'x', max_tokens: 2 }, auth), 401, { code: 'invalid_api_key' }, `completion, ${what}`);
    console.log(`${what}: 401 ${e.code} / ${p.code}`);
  }
  const good = await get('/v1/models', `Authorization: Bearer ${key}\r\n`);
  check(good.status === 200 && JSON.parse(good.body).data[0].id === id, `the right key lists the model: ${good.status}`);
  const { default: OpenAI } = await import(pathToFileURL(path.join(openaiDir, 'index.mjs')).href);
  const client = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: key, maxRetries: 0 });
  const c = await client.completions.create({ model: id, prompt: 'The', max_tokens: 4 });
  check(c.choices[0].text.length > 0, 'the openai client with the key gets a completion');
  const wrong = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: 'sk-nope', maxRetries: 0 });
  let status = 0;
  try {
    await wrong.completions.create({ model: id, prompt: 'The', max_tokens: 4 });
  } catch (err) {
    status = err.status;
    check(err instanceof OpenAI.AuthenticationError, `a wrong key is the client's AuthenticationError, got ${err.constructor.name}`);
  }
  check(status === 401, `wrong key through the client: ${status}`);
  console.log(`openai client: with the key ${JSON.stringify(c.choices[0].text)}; with a wrong key ${status}`);
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('api key: all checks passed');
// The client's kept-alive sockets would hold node for their 30 s timeout.
process.exit(0);

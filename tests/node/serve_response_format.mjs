// response_format on `keel serve` through OpenAI's npm client: for several
// JSON schemas (objects, arrays, enum, const, anyOf, nullable, $ref) the
// output of a tiny trained model, whole and streamed, completions and chat,
// greedy and sampled, ends with finish_reason "stop", JSON.parse's, and
// passes a schema checker written here (independent of keel's grammar);
// json_object gives an object; a schema keyword keel cannot enforce is a 400
// naming it and its path.
// Usage: node serve_response_format.mjs <keel> <model dir> <openai package dir>
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, checkErrorObject, rawPost, startServer, stopServer } from './serve_util.mjs';

const [keel, model, openaiDir] = process.argv.slice(2);
const id = path.basename(model);
const { default: OpenAI } = await import(pathToFileURL(path.join(openaiDir, 'index.mjs')).href);

// The schema subset keel supports, checked on a parsed value. Returns the
// first violation as a string, or null.
function violation(schema, v, root, at = '$') {
  if (schema.$ref) return violation(root.$defs[schema.$ref.split('/').pop()], v, root, at);
  if ('const' in schema) return JSON.stringify(v) === JSON.stringify(schema.const) ? null : `${at}: not the const`;
  if (schema.enum) return schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(v)) ? null : `${at}: not in the enum`;
  if (schema.anyOf) return schema.anyOf.some((s) => violation(s, v, root, at) === null) ? null : `${at}: no anyOf branch`;
  const types = schema.type === undefined ? null : [].concat(schema.type);
  if (types) {
    const is = { object: v !== null && typeof v === 'object' && !Array.isArray(v), array: Array.isArray(v), string: typeof v === 'string', number: typeof v === 'number' && Number.isFinite(v), integer: Number.isInteger(v), boolean: typeof v === 'boolean', null: v === null };
    const t = types.find((x) => is[x]);
    if (!t) return `${at}: not of type ${types.join('|')}`;
    if (t === 'string') {
      const n = [...v].length;
      if (schema.maxLength !== undefined && n > schema.maxLength) return `${at}: longer than ${schema.maxLength}`;
      if (schema.minLength !== undefined && n < schema.minLength) return `${at}: shorter than ${schema.minLength}`;
    }
    if (t === 'array') {
      if (schema.maxItems !== undefined && v.length > schema.maxItems) return `${at}: more than ${schema.maxItems} items`;
      if (schema.minItems !== undefined && v.length < schema.minItems) return `${at}: fewer than ${schema.minItems} items`;
      for (let i = 0; i < v.length; i++) {
        const e = schema.items ? violation(schema.items, v[i], root, `${at}[${i}]`) : null;
        if (e) return e;
      }
    }
    if (t === 'object') {
      for (const r of schema.required ?? []) if (!(r in v)) return `${at}: missing ${r}`;
      for (const [k, x] of Object.entries(v)) {
        const p = schema.properties?.[k];
        if (!p) {
          if (schema.additionalProperties === false) return `${at}: extra key ${k}`;
          continue;
        }
        const e = violation(p, x, root, `${at}.${k}`);
        if (e) return e;
      }
    }
  }
  return null;
}

const schemas = {
  person: { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer' }, member: { type: 'boolean' } }, required: ['name', 'age', 'member'], additionalProperties: false },
  colors: { type: 'object', properties: { colors: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 3 }, note: { anyOf: [{ type: 'string', maxLength: 8 }, { type: 'null' }] } }, required: ['colors', 'note'], additionalProperties: false },
  point: { type: 'object', properties: { at: { $ref: '#/$defs/pt' }, label: { const: 'origin' }, tags: { type: ['array', 'null'], items: { type: 'string', maxLength: 5 }, maxItems: 2 } }, required: ['at', 'label', 'tags'], additionalProperties: false, $defs: { pt: { type: 'object', properties: { x: { type: 'number' }, y: { type: 'number' } }, required: ['x', 'y'], additionalProperties: false } } },
  numbers: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 4 },
};

const srv = await startServer(keel, model, ['--threads', '1']);
let ok = false;
try {
  const client = new OpenAI({ baseURL: `${srv.base}/v1`, apiKey: 'unused', maxRetries: 0 });
  const checked = (name, schema, text, finish, how) => {
    check(finish === 'stop', `${name} ${how}: finish_reason ${finish} (${JSON.stringify(text)})`);
    let v;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new Error(`${name} ${how}: not JSON: ${JSON.stringify(text)}`);
    }
    if (schema) {
      const bad = violation(schema, v, schema);
      check(bad === null, `${name} ${how}: ${bad} in ${text}`);
    }
    return v;
  };
  for (const [name, schema] of Object.entries(schemas)) {
    const response_format = { type: 'json_schema', json_schema: { name, schema, strict: true } };
    for (const [how, extra] of [['greedy', { temperature: 0 }], ['sampled', { temperature: 1, seed: 3 }]]) {
      const c = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: `Give me a ${name}.` }], max_tokens: 100, response_format, ...extra });
      const v = checked(name, schema, c.choices[0].message.content, c.choices[0].finish_reason, `chat ${how}`);
      // Streamed: the same request, the same text, in pieces.
      const s = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: `Give me a ${name}.` }], max_tokens: 100, response_format, stream: true, ...extra });
      let text = '';
      let finish = null;
      for await (const chunk of s) {
        text += chunk.choices[0]?.delta?.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      checked(name, schema, text, finish, `chat streamed ${how}`);
      check(text === c.choices[0].message.content, `${name}: streamed equals whole`);
      console.log(`${name} (${how}): ${JSON.stringify(v)}`);
    }
    const p = await client.completions.create({ model: id, prompt: 'The answer in JSON:', max_tokens: 100, temperature: 0.8, seed: 9, response_format });
    checked(name, schema, p.choices[0].text, p.choices[0].finish_reason, 'completions');
  }
  // json_object: any object (strings are unbounded here, so sample a few
  // seeds and require that most complete; every completed one parses).
  let objects = 0;
  for (const seed of [1, 2, 3, 4]) {
    const c = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'JSON please' }], max_tokens: 100, seed, temperature: 1, response_format: { type: 'json_object' } });
    const ch = c.choices[0];
    if (ch.finish_reason !== 'stop') continue;
    const v = checked('json_object', null, ch.message.content, ch.finish_reason, `seed ${seed}`);
    check(v !== null && typeof v === 'object' && !Array.isArray(v), `json_object gives an object: ${ch.message.content}`);
    objects++;
  }
  check(objects >= 1, 'json_object: at least one sampled object completed');
  console.log(`json_object: ${objects} of 4 completed within 100 tokens`);

  const C = '/v1/chat/completions';
  const base = { model: id, messages: [{ role: 'user', content: 'x' }], max_tokens: 5 };
  const e = checkErrorObject(await rawPost(srv.port, C, { ...base, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { s: { type: 'string', pattern: '^a' } } } } } }), 400, { param: 'response_format' }, 'pattern');
  check(e.message.includes('pattern') && e.message.includes('properties.s'), `the keyword and its path: ${e.message}`);
  checkErrorObject(await rawPost(srv.port, C, { ...base, response_format: { type: 'json_schema' } }), 400, { param: 'response_format' }, 'no json_schema');
  checkErrorObject(await rawPost(srv.port, C, { ...base, response_format: { type: 'xml' } }), 400, { param: 'response_format' }, 'unknown type');
  checkErrorObject(await rawPost(srv.port, C, { ...base, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'number', minimum: 0 } } } }), 400, { param: 'response_format' }, 'minimum');
  ok = true;
} finally {
  if (!ok) srv.proc.kill('SIGKILL');
}
await stopServer(srv);
console.log('response_format: all checks passed');
// The client's kept-alive sockets would hold node for another 30 s.
process.exit(0);

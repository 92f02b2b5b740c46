// crit (the reference CRIU 4.1.1's image tool) as the oracle for tsdump's image layer: its JSON
// text for an image, its encoder, and the schema facts its pycriu package was generated from.
// Running and dumping targets is in criu.ts / target.ts.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CRIT, PYCRIU_PATH } from './criu.js';

const execFileP = promisify(execFile);
const python = (script: string, args: readonly string[] = []) =>
  execFileP('/usr/bin/python3', ['-c', script, ...args], { env: { ...process.env, PYTHONPATH: PYCRIU_PATH }, maxBuffer: 1 << 28 });

/** `crit decode -i FILE [--pretty]`: its stdout without the trailing newline. */
export async function critText(file: string, pretty: boolean): Promise<string> {
  const { stdout } = await execFileP(CRIT, ['decode', '-i', file, ...(pretty ? ['--pretty'] : [])], { maxBuffer: 1 << 28 });
  return stdout.replace(/\n$/, '');
}

/** `crit encode`: JSON in, image bytes out. */
export function critEncode(json: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = execFile(CRIT, ['encode'], { encoding: 'buffer', maxBuffer: 1 << 28 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    );
    child.stdin!.end(json);
  });
}

// What `crit decode [--pretty]` prints for each file (json.dump of pycriu.images.load, indent 4
// when pretty), in one interpreter: a crit process per image and mode costs ~0.2 s.
const DECODE_TEXTS = `
import json, sys
from pycriu import images
out = {}
for path in sys.argv[1:]:
    try:
        out[path] = [json.dumps(images.load(open(path, 'rb'), pretty), indent=4 if pretty else None) for pretty in (False, True)]
    except Exception as e:
        out[path] = {'error': '%s: %s' % (type(e).__name__, e)}
print(json.dumps(out))
`;

export type CritTexts = Map<string, { plain: string; pretty: string } | { error: string }>;

export async function critTexts(files: readonly string[]): Promise<CritTexts> {
  const { stdout } = await python(DECODE_TEXTS, files);
  const raw = JSON.parse(stdout) as Record<string, [string, string] | { error: string }>;
  return new Map(Object.entries(raw).map(([k, v]) => [k, Array.isArray(v) ? { plain: v[0], pretty: v[1] } : v]));
}

// What `crit x DIR ps|fds|mems|rss` prints, the four views in one interpreter; crit keeps a file
// table cache in module globals, reset between views (and dirs) as a fresh crit would start.
const EXPLORE = `
import contextlib, io, json, sys
from crit import __main__ as crit
out = {}
for what in ('ps', 'fds', 'mems', 'rss'):
    crit.files_img = None
    crit.files_cache.clear()
    for ft in crit.file_types.values(): ft['img'] = None
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            crit.explore({'dir': sys.argv[1], 'what': what})
        out[what] = {'text': buf.getvalue()}
    except Exception as e:
        out[what] = {'error': '%s: %s' % (type(e).__name__, e)}
print(json.dumps(out))
`;

export type CritViews = Record<'ps' | 'fds' | 'mems' | 'rss', { text: string } | { error: string }>;

/** `crit x DIR VIEW` for each of crit's four views: its stdout, or the exception crit died of. */
export async function critExplore(dir: string): Promise<CritViews> {
  const { stdout } = await python(EXPLORE, [dir]);
  return JSON.parse(stdout) as CritViews;
}

export interface FieldFacts {
  name: string;
  number: number;
  label: number;
  type: number;
  typeName: string;
  default: string;
  packed: boolean;
  criu: Record<string, string | boolean>;
}

const FACTS = `
import importlib, json, os, pycriu.images as I
from pycriu.images import opts_pb2
messages, enums = {}, {}
def walk_enum(e):
    enums[e.full_name] = [[v.name, v.number] for v in e.values]
def default(f):
    if not f.has_default_value: return ''
    if f.enum_type: return f.enum_type.values_by_number[f.default_value].name
    return str(f.default_value).lower() if isinstance(f.default_value, bool) else str(f.default_value)
def walk(m):
    for e in m.enum_types: walk_enum(e)
    for n in m.nested_types: walk(n)
    messages[m.full_name] = sorted([dict(
        name=f.name, number=f.number, label=f.label, type=f.type,
        typeName=(f.message_type or f.enum_type).full_name if (f.message_type or f.enum_type) else '',
        default=default(f), packed=f.GetOptions().packed,
        criu={d.name: v for d, v in f.GetOptions().Extensions[opts_pb2.criu].ListFields()},
    ) for f in m.fields], key=lambda x: x['number'])
for name in sorted(os.listdir(os.path.dirname(I.__file__))):
    if name.endswith('_pb2.py'):
        fd = importlib.import_module('pycriu.images.' + name[:-3]).DESCRIPTOR
        for m in fd.message_types_by_name.values(): walk(m)
        for e in fd.enum_types_by_name.values(): walk_enum(e)
print(json.dumps(dict(messages=messages, enums=enums)))
`;

/** Every message's fields and every enum's values, as pycriu's generated descriptors have them. */
export async function pycriuFacts(): Promise<{ messages: Record<string, FieldFacts[]>; enums: Record<string, [string, number][]> }> {
  return JSON.parse((await python(FACTS)).stdout);
}

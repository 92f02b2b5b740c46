// The worker process of own-child.ts: forked by the library to dump a tree rooted at the caller's
// child, it runs the in-process flow here, where ptrace stops cannot be reaped by the caller's
// libuv. It takes one 'start' message, answers with one 'result' or 'error', and exits.
import type { LogFields, Logger } from '../log.js';
import { LOG_LEVEL_NAMES, type LogLevelName } from '../log-levels.js';
import { TsdumpError, asTsdumpError } from '../errors.js';
import { dumpInProcess } from './index.js';
import type { DumpEvents, DumpResult } from './result.js';
import { preDumpInProcess } from './pre-dump.js';
import { toWireError, type FromWorker, type ToWorker } from './own-child.js';

const post = (m: FromWorker): void => {
  // a caller gone away hears nothing; the flow was cancelled on the disconnect
  if (process.connected) process.send?.(m);
};

/** The caller's Logger, over the channel. */
function remoteLogger(level: number, file: string | undefined): Logger {
  // a line the caller's log would drop is not sent
  const at =
    (method: LogLevelName) =>
    (text: string, fields?: LogFields): void => {
      if (LOG_LEVEL_NAMES.indexOf(method) <= level) post({ type: 'log', method, text, ...(fields ? { fields } : {}) });
    };
  return {
    level,
    file,
    msg: at('msg'),
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    setStage: (name) => post({ type: 'log stage', name }),
    close: () => {}, // the caller's to close
  };
}

function isToWorker(m: unknown): m is ToWorker {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

async function run(start: Extract<ToWorker, { type: 'start' }>, signal: AbortSignal): Promise<FromWorker> {
  const options = { ...start.options, signal, ...(start.log ? { log: remoteLogger(start.log.level, start.log.file) } : {}) };
  const events: DumpEvents = {
    stage: (name) => post({ type: 'stage', name }),
    pages: (written, task) => post({ type: 'pages', written, task }),
  };
  try {
    const result: DumpResult = await (start.kind === 'dump' ? dumpInProcess(options, events) : preDumpInProcess(options, events));
    return { type: 'result', result };
  } catch (err) {
    return { type: 'error', error: toWireError(asTsdumpError(err)) };
  }
}

if (!process.send) {
  process.stderr.write('tsdump: dump/worker.js is started by the library for a child of the caller, not directly\n');
  process.exit(2);
}

const controller = new AbortController();
let started = false;
// The caller is gone (or closed the channel): nobody would release the tree after us.
process.once('disconnect', () => controller.abort(new TsdumpError('CANCELLED', 'abandoned: the calling process went away')));
process.on('message', (m: unknown) => {
  if (!isToWorker(m)) return;
  if (m.type === 'abort') {
    controller.abort(m.reason !== null ? new TsdumpError('CANCELLED', m.reason) : undefined);
    return;
  }
  if (started) return;
  started = true;
  void run(m, controller.signal).then((answer) => {
    // Exit once the answer is handed to the channel: plugins or scripts may leave handles open.
    if (process.connected) process.send?.(answer, undefined, {}, (err) => process.exit(err ? 1 : 0));
    else process.exit(1);
  });
});

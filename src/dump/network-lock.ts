// The network lock of a dump with --tcp-established (CRIU's network_lock/network_unlock and
// criu/netfilter.c, for a tree in the host's network namespace): from the moment the tree is
// frozen until its connections are either killed or handed back, no packet of theirs may move in
// either direction, or the sequence numbers and queues read through TCP_REPAIR would be stale by
// the time a restore replays them, and a peer could see the dying socket answer with a RST.
//
// Each connection gets two iptables DROP rules, inserted at the head of INPUT (peer → us) and
// OUTPUT (us → peer), written exactly as CRIU 4.1 writes them, because `criu restore
// --tcp-established` deletes them by that very text once it has rebuilt the connections
// (criu/sk-tcp.c rst_unlock_tcp_connections, whatever the outcome of each deletion). Packets
// marked 0xC114 (SOCCR_MARK) pass: that is how CRIU's restore injects a FIN for half-closed
// connections while the lock holds.
//
// How it ends, as CRIU's cr_dump_finish does it:
//   - the tree is killed after a dump (or left stopped): the rules stay for the restore to lift,
//     the sockets stay in repair mode and vanish silently with their tasks (`keep`);
//   - the dump failed, or --leave-running: every socket leaves repair mode first, then the rules
//     go (`unlock`), and only then does the tree run again.
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import type { TcpRepairSocket } from '../../native/index.js';
import { native } from '../native.js';
import { TsdumpError } from '../errors.js';
import type { Logger } from '../log.js';
import { inetAddress } from './fds/inet-socket.js';
import { collectTreeInodes, mptcpSockets } from './fds/socket-diag.js';

const AF_INET = 2;
const AF_INET6 = 10;
const IPPROTO_TCP = 6;
const TCP_LISTEN = 10;
const TCP_CLOSE = 7;
/** SOCCR_MARK (soccr/soccr.h): packets CRIU's restore sends past the lock. */
const SOCCR_MARK = '0xC114';

/** One TCP connection of the dumped tree, as inet_diag reports it. */
export interface TcpConnection {
  readonly ino: number;
  readonly family: number;
  readonly state: number;
  /** Address words as they lie in memory (1 for IPv4, 4 for IPv6). */
  readonly srcAddr: readonly number[];
  readonly srcPort: number;
  readonly dstAddr: readonly number[];
  readonly dstPort: number;
}

interface Rule {
  readonly tool: string;
  /** The rule's specification after `-I`/`-D`. */
  readonly spec: readonly string[];
}

/**
 * The TCP sockets of `pids` that are neither listening nor closed, by inode. MPTCP sockets are
 * left out: their subflows are listed as TCP under the socket's inode, but they cannot be
 * repaired (the dump refuses them, or closes them with --tcp-close).
 */
export async function treeConnections(pids: readonly number[]): Promise<TcpConnection[]> {
  const inodes = await collectTreeInodes(pids);
  if (inodes.size === 0) return [];
  // a kernel without MPTCP has no MPTCP socket to leave out (and answers ENOENT)
  const mptcp = await mptcpSockets().catch(() => new Map<number, unknown>());
  const out: TcpConnection[] = [];
  for (const family of [AF_INET, AF_INET6]) {
    for (const s of await native.inetSockets(family, IPPROTO_TCP)) {
      if (!inodes.has(s.ino) || mptcp.has(s.ino) || s.state === TCP_LISTEN || s.state === TCP_CLOSE) continue;
      out.push({ ino: s.ino, family, state: s.state, srcAddr: s.srcAddr, srcPort: s.srcPort, dstAddr: s.dstAddr, dstPort: s.dstPort });
    }
  }
  return out;
}

/** "127.0.0.1:5000 -> 127.0.0.1:41000" for messages. */
export function describeConnection(c: TcpConnection): string {
  return `${inetAddress(c.family, c.srcAddr, c.srcPort)} -> ${inetAddress(c.family, c.dstAddr, c.dstPort)}`;
}

export class NetworkLock {
  private readonly rules: Rule[] = [];
  private readonly held: { socket: TcpRepairSocket; what: string }[] = [];
  private readonly locked = new Set<number>();
  private done = false;

  private constructor(private readonly log: Logger | undefined) {}

  /**
   * Locks every connection of the tree (frozen already). On failure, whatever was locked is
   * unlocked again before the error is thrown.
   */
  static async lock(connections: readonly TcpConnection[], log?: Logger): Promise<NetworkLock> {
    const lock = new NetworkLock(log);
    if (connections.length === 0) return lock;
    const iptables = findTool('iptables');
    const ip6tables = findTool('ip6tables');
    try {
      for (const c of connections) {
        const v4 = c.family === AF_INET || isV4Mapped(c.dstAddr);
        const tool = v4 ? iptables : ip6tables;
        if (!tool) {
          throw new TsdumpError(
            'UNSUPPORTED',
            `TCP connection ${describeConnection(c)}: --tcp-established locks connections with ${v4 ? 'iptables' : 'ip6tables'}, which is not installed (apt-get install iptables)`,
          );
        }
        // INPUT first, as CRIU does: the peer's packets stop before ours.
        await lock.insert({ tool, spec: ruleSpec('INPUT', c, v4) });
        await lock.insert({ tool, spec: ruleSpec('OUTPUT', c, v4) });
        lock.locked.add(c.ino);
        log?.info(`Locked ${describeConnection(c)} connection`);
      }
    } catch (err) {
      await lock.unlock().catch((e: unknown) => appendCause(err, e));
      throw err;
    }
    return lock;
  }

  /**
   * Puts the socket behind fd `fd` of `pid` into repair mode and keeps it until `unlock` or
   * `keep`. Refused for a connection this lock does not hold.
   */
  repair(pid: number, fd: number, ino: number): TcpRepairSocket {
    if (this.done) throw new TsdumpError('KERNEL', `pid ${pid}: fd ${fd}: the network lock was already released`);
    if (!this.locked.has(ino)) {
      throw new TsdumpError('KERNEL', `pid ${pid}: fd ${fd}: socket ${ino} was not connected when the network was locked`);
    }
    const socket = native.TcpRepairSocket.pause(pid, fd);
    this.held.push({ socket, what: `pid ${pid}: fd ${fd}` });
    return socket;
  }

  /**
   * Gives the connections back: every socket leaves repair mode, then every rule is deleted.
   * Tries everything and reports every failure in one error.
   */
  async unlock(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const failures: string[] = [];
    for (const { socket, what } of this.held.splice(0)) {
      try {
        socket.resume();
      } catch (err) {
        failures.push(`${what}: leaving TCP repair mode: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    for (const rule of this.rules.splice(0).reverse()) {
      try {
        await runTool(rule.tool, ['-w', '-t', 'filter', '-D', ...rule.spec]);
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
      }
    }
    if (this.locked.size > 0) this.log?.info(`Unlocked ${this.locked.size} TCP connection(s)`);
    this.locked.clear();
    if (failures.length > 0) throw new TsdumpError('KERNEL', `unlocking the network: ${failures.join('; ')}`);
  }

  /**
   * After a dump that kills (or stops) the tree: the sockets stay in repair mode, so they close
   * without a FIN or RST, and the rules stay until `criu restore --tcp-established` lifts them.
   */
  keep(): void {
    if (this.done) return;
    this.done = true;
    for (const { socket } of this.held.splice(0)) socket.release();
    if (this.rules.length > 0) {
      this.log?.info(`${this.locked.size} TCP connection(s) stay locked (${this.rules.length} iptables rules) until the restore`);
    }
    this.rules.length = 0;
  }

  private async insert(rule: Rule): Promise<void> {
    await runTool(rule.tool, ['-w', '-t', 'filter', '-I', ...rule.spec]);
    this.rules.push(rule);
  }
}

/**
 * The rule text of criu/netfilter.c: for INPUT the peer is the source, for OUTPUT we are. An
 * IPv4-mapped IPv6 connection travels as IPv4, so its rule names the embedded IPv4 addresses.
 */
function ruleSpec(chain: 'INPUT' | 'OUTPUT', c: TcpConnection, v4: boolean): string[] {
  const ours = address(c.family, c.srcAddr, v4);
  const theirs = address(c.family, c.dstAddr, v4);
  const [src, sport, dst, dport] = chain === 'INPUT' ? [theirs, c.dstPort, ours, c.srcPort] : [ours, c.srcPort, theirs, c.dstPort];
  return [chain, '--protocol', 'tcp', '-m', 'mark', '!', '--mark', SOCCR_MARK, '--source', src, '--sport', String(sport), '--destination', dst, '--dport', String(dport), '-j', 'DROP'];
}

function isV4Mapped(words: readonly number[]): boolean {
  // ::ffff:a.b.c.d: the third word holds 00 00 ff ff in memory order.
  return words.length === 4 && words[0] === 0 && words[1] === 0 && words[2]! >>> 0 === 0xffff0000;
}

/** An address word list as iptables wants it: dotted IPv4 or full IPv6. */
function address(family: number, words: readonly number[], v4: boolean): string {
  const ip = (w: readonly number[], fam: number) => inetAddress(fam, w, 0).replace(/:0$/, '').replace(/^\[(.*)\]$/, '$1');
  if (family === AF_INET6 && v4) return ip([words[3]!], AF_INET);
  return ip(words, family);
}

/** iptables/ip6tables on PATH or in the sbin directories PATH often lacks. */
function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function runTool(tool: string, args: readonly string[]): Promise<void> {
  // loaded when a lock is taken: child_process brings net, dgram and streams into every start-up
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile(tool, [...args], { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const why = stderr.trim() || err.message;
      reject(new TsdumpError('KERNEL', `${tool} ${args.join(' ')}: ${why}`));
    });
  });
}

function appendCause(err: unknown, more: unknown): void {
  if (err instanceof Error) err.message += ` (and ${more instanceof Error ? more.message : String(more)})`;
}

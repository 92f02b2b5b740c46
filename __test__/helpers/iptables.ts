// The network lock's iptables rules, as the tests look at them.
import { run } from './criu.js';

/**
 * The lock rules (criu/netfilter.c's DROP rules, marked 0xC114) naming one of `ports`, IPv4 and
 * IPv6, as `ip(6)tables -S` prints them. Tests running at the same time lock connections of
 * their own: a test looks at the rules of its own ports only.
 */
export async function lockRulesNaming(ports: readonly number[]): Promise<string[]> {
  const mine = new RegExp(`--[sd]port (${ports.join('|')})\\b`);
  const all = [...(await run('iptables', ['-w', '-S'])).stdout.split('\n'), ...(await run('ip6tables', ['-w', '-S'])).stdout.split('\n')];
  return all.filter((l) => l.includes('0xc114') && mine.test(l));
}

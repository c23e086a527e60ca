// Unit tests of the pure helpers (argv/env parsing, time and exit formatting), run by build.sh
// under node's test runner after bundling with esbuild.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SessionInfo } from './types';
import {
  withCtrl,
  findSession,
  attentionLabel,
  attentionOf,
  attentionRank,
  formatDelay,
  formatExit,
  formatKiB,
  formatUptime,
  parseEnv,
  parseTime,
  permissionSummary,
  shortArgv,
  splitArgv,
  statusBadge,
  joinArgv,
} from './format';
import { overScrollback } from './redraw';

test('splitArgv: words, quotes, escapes', () => {
  assert.deepEqual(splitArgv('bash -i'), ['bash', '-i']);
  assert.deepEqual(splitArgv('  a   b  '), ['a', 'b']);
  assert.deepEqual(splitArgv(`python3 -c 'print("hi there")'`), ['python3', '-c', 'print("hi there")']);
  assert.deepEqual(splitArgv('echo "a \\"b\\" c" d'), ['echo', 'a "b" c', 'd']);
  assert.deepEqual(splitArgv("x '' y"), ['x', '', 'y']);
  assert.deepEqual(splitArgv('a\\ b c'), ['a b', 'c']);
  assert.deepEqual(splitArgv('pre"mid"\'post\''), ['premidpost']);
  assert.deepEqual(splitArgv('sh -c "echo $HOME; ls | wc"'), ['sh', '-c', 'echo $HOME; ls | wc']);
  assert.deepEqual(splitArgv(''), []);
  assert.throws(() => splitArgv("echo 'oops"), /unclosed single quote/);
  assert.throws(() => splitArgv('echo "oops'), /unclosed double quote/);
});

test('parseEnv: K=V lines', () => {
  assert.deepEqual(parseEnv('A=1\n\n# c\nB=x=y\r\nC='), [
    ['A', '1'],
    ['B', 'x=y'],
    ['C', ''],
  ]);
  assert.throws(() => parseEnv('NOEQUALS'), /not KEY=VALUE/);
  assert.throws(() => parseEnv('1X=2'), /not valid/);
});

test('parseTime: RFC 3339 and SystemTime objects', () => {
  assert.equal(parseTime('2024-01-02T03:04:05Z'), Date.UTC(2024, 0, 2, 3, 4, 5));
  assert.equal(parseTime({ secs_since_epoch: 10, nanos_since_epoch: 500_000_000 }), 10_500);
  assert.equal(parseTime(null), null);
  assert.equal(parseTime('nonsense'), null);
});

test('formatExit: both spellings', () => {
  assert.equal(formatExit({ Code: 0 }), 'exit 0');
  assert.equal(formatExit({ code: 2 }), 'exit 2');
  assert.equal(formatExit({ Signal: 9 }), 'signal 9');
  assert.equal(formatExit({ signal: 15 }), 'signal 15');
  assert.equal(formatExit(null), '');
});

test('badges and sizes', () => {
  assert.equal(attentionLabel('needs_permission'), 'needs permission');
  assert.equal(attentionLabel('idle'), 'waiting for input');
  assert.equal(attentionLabel(null), null);
  assert.equal(attentionLabel('working'), null);
  assert.equal(attentionLabel('starting'), null);
  assert.equal(attentionLabel('exited'), null);
  assert.equal(attentionLabel('ready'), null);
  assert.equal(attentionOf({ attention: 'idle', agent_fresh: true }), 'ready');
  assert.equal(attentionOf({ attention: 'idle' }), 'idle');
  assert.equal(attentionOf({ attention: 'working', agent_fresh: true }), 'working');
  assert.equal(statusBadge({ state: 'running', attention: 'ready', last_exit: null }).text, 'ready');
  // An agent that has not started and waits on its screen (its folder trust) asks something.
  assert.equal(attentionOf({ attention: 'starting', agent_asks_at_start: 'Trust?' }), 'asks_at_start');
  assert.equal(attentionOf({ attention: 'starting', agent_asks_at_start: null }), 'starting');
  assert.deepEqual(statusBadge({ state: 'running', attention: 'asks_at_start', last_exit: null }), {
    text: 'asks on its screen',
    cls: 'att-perm',
  });
  assert.equal(attentionLabel('notification'), 'notification');
  assert.equal(attentionLabel('PermissionRequest'), 'needs permission');
  assert.equal(attentionLabel('Claude needs your permission to use Bash'), 'needs permission');
  assert.equal(attentionLabel('Claude is waiting for your input'), 'waiting for input');
  assert.equal(attentionLabel('Something else happened to the agent today'), 'waiting');
  assert.deepEqual(statusBadge({ state: 'running', attention: null, last_exit: null }), {
    text: 'running',
    cls: 'st-running',
  });
  assert.equal(statusBadge({ state: 'stopped', attention: null, last_exit: { code: 1 } }).text, 'exit 1');
  // Given up on by its policy: said so, not only the exit of its last process.
  assert.equal(statusBadge({ state: 'failed', attention: null, last_exit: { code: 1 } }).text, 'failed: exit 1');
  assert.equal(statusBadge({ state: 'failed', attention: null, last_exit: null }).text, 'failed');
  // A requested stop is not a failure, whatever signal it took.
  assert.deepEqual(
    statusBadge({ state: 'stopped', attention: null, last_exit: { signal: 1 }, reason: 'stopped' }),
    { text: 'stopped', cls: 'st-stopped' },
  );
  assert.equal(
    statusBadge({ state: 'stopped', attention: null, last_exit: { signal: 9 }, reason: 'exited (signal 9)' }).cls,
    'exit-bad',
  );
  assert.equal(statusBadge({ state: 'running', attention: 'waiting', last_exit: null }).cls, 'att-wait');
  // A question to choose from: the badge says what the ask bar says.
  const ask = { state: 'running', attention: 'needs_permission', last_exit: null };
  assert.deepEqual(statusBadge({ ...ask, permission: { tool: 'AskUserQuestion' } }), {
    text: 'asks you to choose',
    cls: 'att-perm',
  });
  assert.equal(statusBadge({ ...ask, permission: { tool: 'Bash' } }).text, 'needs permission');
  assert.deepEqual(statusBadge({ state: 'running', attention: 'working', last_exit: null }), {
    text: 'working',
    cls: 'att-work',
  });
  assert.equal(formatUptime(59_000), '59s');
  assert.equal(formatUptime(61_000), '1m 01s');
  assert.equal(formatUptime(3_600_000 * 25), '1d 01h');
  assert.equal(formatKiB(2048), '2.0 MiB');
});

test('formatDelay: rounded for reading', () => {
  // A restart backoff with jitter, as the events panel showed it ("in 1.7106072810000001s").
  assert.equal(formatDelay(1.7106072810000001), '1.7s');
  assert.equal(formatDelay({ secs: 1, nanos: 710607281 }), '1.7s');
  assert.equal(formatDelay({ secs: 0, nanos: 250000000 }), '0.25s');
  assert.equal(formatDelay({ secs: 42, nanos: 600000000 }), '43s');
  assert.equal(formatDelay(2), '2s');
  assert.equal(formatDelay('soon'), 'soon');
});

test('joinArgv quotes what a shell would split differently, and splitArgv reads it back', () => {
  assert.equal(joinArgv(['bash', '-c', 'echo $FOO; sleep 100']), `bash -c 'echo $FOO; sleep 100'`);
  assert.equal(joinArgv(['cat']), 'cat');
  for (const argv of [['sh', '-c', "it's"], ['x', ''], ['a b', 'c\\d']]) {
    assert.deepEqual(splitArgv(joinArgv(argv)), argv);
  }
});

test('permissionSummary says the command, the file, or the input', () => {
  assert.equal(permissionSummary('Bash', { command: 'rm -rf build', description: 'x' }), 'Bash: rm -rf build');
  assert.equal(permissionSummary('Write', { file_path: '/tmp/a', content: 'x' }), 'Write: /tmp/a');
  assert.equal(permissionSummary('Mcp', { a: 1 }), 'Mcp: {"a":1}');
  // A second command after a newline is not hidden as a space.
  assert.equal(permissionSummary('Bash', { command: 'echo safe\nrm -rf ~/x' }), 'Bash: echo safe ⏎ rm -rf ~/x');
  assert.equal(permissionSummary('Bash', { command: 'a\n  b' }), 'Bash: a ⏎ b');
  assert.equal(permissionSummary('Tool', undefined), 'Tool');
  assert.equal(
    permissionSummary('AskUserQuestion', { questions: [{ question: 'Which colour?', options: [] }] }),
    'choose: Which colour?',
  );
  assert.equal(
    permissionSummary('AskUserQuestion', { questions: [{ question: 'A?' }, { question: 'B?' }] }),
    'choose: A? (+1 more)',
  );
  assert.ok(permissionSummary('Bash', { command: 'x'.repeat(400) }).endsWith('…'));
});

test('overScrollback: the full reset goes, the screen is pushed up with the note', () => {
  const snap = new TextEncoder().encode('\x1b[?47l\x1bc\x1b[?1049hnow');
  const out = new TextDecoder().decode(overScrollback(snap, 3, '[note]'));
  assert.ok(!out.includes('\x1bc'), out);
  assert.ok(out.endsWith('\x1b[!p\x1b[H\x1b[2J\x1b[?1049hnow'), out);
  // The note on a new line under the bottom row (the resets before it home the cursor: it went
  // over the second row), then a screenful of new lines.
  assert.ok(out.includes('\x1b[r\x1b[?6l\x1b[0m\x1b[3;1H\r\n[note]\r\n\r\n\r\n\x1b[!p'), out);
  // A snapshot without the reset (never expected) is drawn as it is after the soft reset.
  const bare = new TextDecoder().decode(overScrollback(new TextEncoder().encode('x'), 1, ''));
  assert.ok(bare.endsWith('\x1b[2Jx'), bare);
});

test('the list puts questions first, then finished turns, agents at work, the rest, the ended', () => {
  const rank = (state: string, attention: string | null) => attentionRank({ state, attention });
  const order = [
    rank('running', 'needs_permission'),
    rank('running', 'asks_at_start'),
    rank('running', 'idle'),
    rank('failed', null),
    rank('running', 'working'),
    rank('running', null),
    rank('stopped', null),
  ];
  assert.deepEqual(order, [0, 0, 1, 1, 2, 3, 4]);
});

test('a command line for a glance names the program, not its path', () => {
  assert.equal(shortArgv(['/home/u/.npm/bin/claude', '--permission-mode', 'default']), 'claude --permission-mode default');
  assert.equal(shortArgv(['bash', '-c', 'echo hi']), "bash -c 'echo hi'");
  assert.equal(shortArgv([]), '');
});

test('withCtrl: letters and @[\\]^_ become control characters, the rest as it is', () => {
  assert.equal(withCtrl('c'), '\x03');
  assert.equal(withCtrl('D'), '\x04');
  assert.equal(withCtrl('['), '\x1b');
  assert.equal(withCtrl('\\'), '\x1c');
  assert.equal(withCtrl(' '), '\x00');
  assert.equal(withCtrl('?'), '\x7f');
  assert.equal(withCtrl('1'), '1');
  assert.equal(withCtrl('\x1b[D'), '\x1b[1;5D');
  assert.equal(withCtrl('\x1bOA'), '\x1b[1;5A');
  assert.equal(withCtrl('paste'), 'paste');
});

test('findSession reads a key as the server does', () => {
  const s = (id: string, name: string) => ({ id, name }) as unknown as SessionInfo;
  const a = s('4521aaaa-0000-4000-8000-000000000001', 'work');
  const b = s('4521bbbb-0000-4000-8000-000000000002', '4521bbbb');
  const list = [a, b];
  assert.equal(findSession(list, a.id), a);
  assert.equal(findSession(list, 'work'), a);
  // A short key is only ever a name: a removed session's name does not reach another's id.
  assert.equal(findSession(list, '4521'), undefined);
  assert.equal(findSession(list, '4521aaa'), undefined);
  assert.equal(findSession(list, '4521AAAA'), a);
  assert.equal(findSession(list, '4521aaaa-0'), a);
  // One session's name and another's id start: neither.
  assert.equal(findSession([a, s('4521aaaa-1111-4000-8000-000000000003', '4521aaaa')], '4521aaaa'), undefined);
  // A name alone, even when it looks like an id's start.
  assert.equal(findSession([b], '4521bbbb'), b);
  assert.equal(findSession(list, 'nope'), undefined);
});

// Unit tests of the structured agent's output as the terminal view shows it (`agentlines.ts`),
// run by build.sh under node's test runner after bundling with esbuild.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentLines, LINE_MAX, SUMMARY_MAX, oneLine, renderLine } from './agentlines';

/** Without colours, to compare text. */
const plain = (s: string | null): string | null => (s == null ? s : s.replace(/\x1b\[[0-9;]*m/g, ''));
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

test('renderLine: each kind of line as a person reads it', () => {
  assert.equal(
    plain(renderLine('{"type":"system","subtype":"init","model":"claude-x","cwd":"/w"}')),
    '● session started · claude-x · /w\n',
  );
  assert.equal(
    plain(
      renderLine(
        JSON.stringify({
          type: 'assistant',
          message: {
            content: [
              { type: 'text', text: 'I will create it.\n' },
              { type: 'tool_use', name: 'Bash', input: { command: 'touch\n  made' } },
            ],
          },
        }),
      ),
    ),
    'I will create it.\n● Bash(touch made)\n',
  );
  assert.equal(
    plain(
      renderLine(
        JSON.stringify({
          type: 'user',
          message: { content: [{ type: 'tool_result', content: [{ type: 'text', text: 'done' }], is_error: false }] },
        }),
      ),
    ),
    '  └ done\n',
  );
  assert.equal(
    plain(
      renderLine(
        JSON.stringify({
          type: 'control_request',
          request_id: 'r1',
          request: { subtype: 'can_use_tool', tool_name: 'Write', input: { file_path: '/w/a.txt' } },
        }),
      ),
    ),
    '? asks to use Write: /w/a.txt\n',
  );
  assert.equal(
    plain(renderLine('{"type":"result","subtype":"success","is_error":false,"duration_ms":2500,"total_cost_usd":0.0123}')),
    '— turn done · 2.5 s · $0.0123 —\n',
  );
  assert.equal(plain(renderLine('{"type":"result","subtype":"error_max_turns","is_error":true}')), '— turn failed (error_max_turns) —\n');
  // Nothing to show for a partial message's delta; an unknown kind as its JSON, dim; a line
  // that is not JSON as it is.
  assert.equal(renderLine('{"type":"stream_event","event":{}}'), null);
  assert.equal(plain(renderLine('{"type":"new_kind","x":1}')), '{"type":"new_kind","x":1}\n');
  assert.equal(plain(renderLine('warning: something')), 'warning: something\n');
});

test('renderLine: an escape sequence in the agent\'s text does not reach the terminal', () => {
  const out = renderLine(JSON.stringify({ type: 'assistant', message: { content: [{ type: 'text', text: 'a\x1b[2Jb\x07c' }] } }));
  assert.equal(plain(out), 'a[2Jbc\n');
  assert.ok(!out?.includes('\x1b[2J'));
});

test('oneLine: cut to its bound with an ellipsis', () => {
  const long = 'x'.repeat(SUMMARY_MAX + 10);
  const cut = oneLine(long);
  assert.equal([...cut].length, SUMMARY_MAX);
  assert.ok(cut.endsWith('…'));
  assert.equal(oneLine('  a \n b  '), 'a b');
});

test('AgentLines: a line shows once it ends, whatever pieces it came in', () => {
  const v = new AgentLines();
  v.restart(0);
  const line = JSON.stringify({ type: 'assistant', message: { content: [{ type: 'text', text: 'héllo' }] } });
  const b = bytes(`${line}\n`);
  // Cut inside the two bytes of é, too.
  const at = b.indexOf(0xc3) + 1;
  assert.equal(v.feed(b.subarray(0, 5)), '');
  assert.equal(v.feed(b.subarray(5, at)), '');
  assert.equal(plain(v.feed(b.subarray(at))), 'héllo\n');
  // Two lines in one piece, the second not ended yet.
  assert.equal(plain(v.feed(bytes('{"type":"result","is_error":false}\n{"type":"res'))), '— turn done —\n');
  assert.equal(plain(v.feed(bytes('ult","is_error":false}\n'))), '— turn done —\n');
});

test('AgentLines: started mid-line (a backlog, a gap) skips to the next line', () => {
  const v = new AgentLines();
  v.restart(100);
  assert.equal(v.feed(bytes('e":"result"}')), '');
  assert.equal(plain(v.feed(bytes('\n{"type":"result","is_error":false}\n'))), '— turn done —\n');
  // After a gap, what was held of a line is not joined to what comes after the gap.
  assert.equal(v.feed(bytes('{"type":"assist')), '');
  v.restart(5000);
  assert.equal(plain(v.feed(bytes('t"}\n{"type":"result","is_error":false}\n'))), '— turn done —\n');
});

test('AgentLines: a line past its bound is said, not held', () => {
  const v = new AgentLines();
  v.restart(0);
  const piece = bytes('x'.repeat(1 << 20));
  let said = '';
  for (let i = 0; i <= LINE_MAX >> 20; i++) said += v.feed(piece);
  assert.match(plain(said) ?? '', /a line longer than 8 MiB, not shown/);
  // Its rest is not shown either; the next line is.
  assert.equal(v.feed(piece), '');
  assert.equal(plain(v.feed(bytes('yyy\n{"type":"result","is_error":false}\n'))), '— turn done —\n');
});

// What the terminal view shows of a structured agent (a session in stream-json mode): its
// output is one JSON object per line (Claude Code's `--output-format stream-json`), which the
// log keeps as it is; read raw on a phone it is a wall of JSON. This turns each whole line into
// what a person reads — the agent's text, a line per tool call and result, a question, the end
// of a turn — and leaves a line that is not one of those as it was. Its own file: a small
// decoder with its own state (the line not yet ended, the UTF-8 not yet whole).

/** Most characters shown of a tool's input or result, a thinking block or an unknown line. */
export const SUMMARY_MAX = 200;

/** Longest line kept while it is not ended (a tool's result can make a line of megabytes);
 * a longer one is said, not shown, and not held. */
export const LINE_MAX = 8 * 1024 * 1024;

const DIM = '\x1b[2m';
const BOLD = '\x1b[1m';
const CYAN = '\x1b[36m';
const RED = '\x1b[31m';
const YELLOW = '\x1b[33m';
const RESET = '\x1b[0m';

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `text` without control characters (an escape sequence in an agent's text would drive this
 * terminal), tabs kept; newlines kept only where `lines` says. */
function clean(text: string, lines: boolean): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === '\n') out += lines ? '\n' : ' ';
    else if (ch === '\t') out += lines ? '\t' : ' ';
    else if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) continue;
    else out += ch;
  }
  return out;
}

/** `text` in one line of at most [`SUMMARY_MAX`] characters, cut with `…`. */
export function oneLine(text: string): string {
  const line = clean(text, false).replace(/ +/g, ' ').trim();
  const chars = [...line];
  return chars.length > SUMMARY_MAX ? `${chars.slice(0, SUMMARY_MAX - 1).join('')}…` : line;
}

/** What a tool call is about, in a line: the input field a person reads first. */
function inputSummary(input: unknown): string {
  if (!isObject(input)) return input == null ? '' : oneLine(JSON.stringify(input));
  for (const k of ['command', 'file_path', 'path', 'url', 'pattern', 'description', 'prompt']) {
    const v = input[k];
    if (typeof v === 'string') return oneLine(v);
  }
  return oneLine(JSON.stringify(input));
}

/** A tool result's content (a string, or content blocks) as text. */
function resultText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((b) => (isObject(b) && typeof b.text === 'string' ? b.text : ''))
      .filter((t) => t)
      .join(' ');
  }
  return content == null ? '' : JSON.stringify(content);
}

/** The content blocks of a message line (`message.content`: a string or blocks). */
function blocks(line: Json): Json[] {
  const message = line.message;
  if (!isObject(message)) return [];
  const content = message.content;
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  return Array.isArray(content) ? content.filter(isObject) : [];
}

/** One stream-json line as shown (with its line end), or null for a line that shows nothing
 * (a partial message's delta, a keep-alive). */
export function renderLine(raw: string): string | null {
  let line: unknown;
  try {
    line = JSON.parse(raw);
  } catch {
    // Not JSON (a warning the program printed): as it is.
    return `${clean(raw, false)}\n`;
  }
  if (!isObject(line)) return `${DIM}${oneLine(raw)}${RESET}\n`;
  const type = typeof line.type === 'string' ? line.type : '';
  switch (type) {
    case 'system': {
      if (line.subtype !== 'init') return null;
      const model = typeof line.model === 'string' ? ` · ${oneLine(line.model)}` : '';
      const cwd = typeof line.cwd === 'string' ? ` · ${oneLine(line.cwd)}` : '';
      return `${DIM}● session started${model}${cwd}${RESET}\n`;
    }
    case 'assistant': {
      let out = '';
      for (const b of blocks(line)) {
        if (b.type === 'text' && typeof b.text === 'string') {
          const text = clean(b.text, true).replace(/\n+$/, '');
          if (text) out += `${text}\n`;
        } else if (b.type === 'tool_use') {
          const name = typeof b.name === 'string' ? oneLine(b.name) : 'tool';
          out += `${CYAN}● ${name}(${inputSummary(b.input)})${RESET}\n`;
        } else if (b.type === 'thinking' && typeof b.thinking === 'string') {
          out += `${DIM}· ${oneLine(b.thinking)}${RESET}\n`;
        }
      }
      return out || null;
    }
    case 'user': {
      let out = '';
      for (const b of blocks(line)) {
        if (b.type === 'tool_result') {
          const colour = b.is_error === true ? RED : DIM;
          out += `${colour}  └ ${oneLine(resultText(b.content)) || '(no output)'}${RESET}\n`;
        } else if (b.type === 'text' && typeof b.text === 'string') {
          out += `${BOLD}> ${oneLine(b.text)}${RESET}\n`;
        }
      }
      return out || null;
    }
    case 'control_request': {
      const req = isObject(line.request) ? line.request : {};
      if (req.subtype === 'can_use_tool') {
        const tool = typeof req.tool_name === 'string' ? oneLine(req.tool_name) : 'a tool';
        const what = inputSummary(req.input);
        return `${YELLOW}? asks to use ${tool}${what ? `: ${what}` : ''}${RESET}\n`;
      }
      return `${DIM}● asks: ${oneLine(String(req.subtype ?? 'something'))}${RESET}\n`;
    }
    case 'control_cancel_request':
      return `${DIM}● question withdrawn${RESET}\n`;
    case 'result': {
      const failed = line.is_error === true;
      const parts = [failed ? `turn failed (${oneLine(String(line.subtype ?? 'error'))})` : 'turn done'];
      if (typeof line.duration_ms === 'number') parts.push(`${(line.duration_ms / 1000).toFixed(1)} s`);
      if (typeof line.total_cost_usd === 'number') parts.push(`$${line.total_cost_usd.toFixed(4)}`);
      return `${failed ? RED : DIM}— ${parts.join(' · ')} —${RESET}\n`;
    }
    case 'stream_event':
    case 'keep_alive':
      return null;
    default:
      return `${DIM}${oneLine(raw)}${RESET}\n`;
  }
}

/** Turns a structured agent's output bytes into lines to show, a whole line at a time. */
export class AgentLines {
  private decoder = new TextDecoder();
  /** The line not ended yet, in the pieces it came in (joined once it ends: a line of
   * megabytes in 64 KiB frames is not copied again with each). */
  private parts: string[] = [];
  private held = 0;
  /** Up to the next line end, the output is the rest of a line whose start is not here. */
  private midLine = false;

  /** Starts over at output offset `offset`: a line cut there is not shown (its start was
   * never seen: a backlog from the middle of the log, or a gap a slow viewer was told of). */
  restart(offset: number): void {
    this.decoder = new TextDecoder();
    this.parts = [];
    this.held = 0;
    this.midLine = offset > 0;
  }

  /** What `bytes` (the output after the last ones fed) end, shown. */
  feed(bytes: Uint8Array): string {
    const chunk = this.decoder.decode(bytes, { stream: true });
    const nl = chunk.indexOf('\n');
    let out = '';
    if (nl < 0) {
      if (!this.midLine) {
        this.parts.push(chunk);
        this.held += chunk.length;
      }
    } else {
      const text = this.midLine ? chunk.slice(nl + 1) : this.parts.join('') + chunk;
      this.midLine = false;
      const lines = text.split('\n');
      const rest = lines.pop() ?? '';
      this.parts = rest ? [rest] : [];
      this.held = rest.length;
      out = lines
        .map((l) => l.replace(/\r$/, ''))
        .filter((l) => l.trim())
        .map((l) => renderLine(l) ?? '')
        .join('');
    }
    if (this.held > LINE_MAX) {
      // Not held any longer: the rest of it, up to its end, is not shown either.
      this.parts = [];
      this.held = 0;
      this.midLine = true;
      out += `${DIM}(a line longer than ${LINE_MAX >> 20} MiB, not shown: \`corral logs\` has it)${RESET}\n`;
    }
    return out;
  }
}

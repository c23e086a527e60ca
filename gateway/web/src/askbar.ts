// The terminal view's ask bar: the permission question an agent waits for, answered from the
// page (Allow / Deny, Deny with a reason, an AskUserQuestion's choices), or a note that the
// agent's own terminal holds it. Its own file: it is the view's one form, with its own state
// (the question shown, the reason being typed), and the view only tells it the session's info.
import { h, setText, toast } from './dom';
import { isAlive, permissionSummary } from './format';
import { answerPermission } from './http';
import type { PermissionAsk, SessionInfo } from './types';

/**
 * The question an agent waits for, with Allow / Deny and a Deny with a reason (writers
 * only; hidden otherwise); or, for a question held by the agent's own terminal (its hook's
 * wait ran out, or the server was restarted or upgraded while it asked), a note that it is
 * answered there.
 */
export class AskBar {
  /** The bar's host, under the view's header. */
  readonly el: HTMLElement;
  private readonly ask: HTMLElement;
  private readonly askLabel: HTMLElement;
  private readonly askText: HTMLElement;
  private readonly askChoices: HTMLElement;
  private readonly askActions: HTMLElement;
  private readonly askReason: HTMLElement;
  private readonly askReasonInput: HTMLInputElement;
  private readonly askTerm: HTMLElement;
  /** The id of the question the ask bar shows (an answer names it). */
  private askId: string | undefined;

  /** `session`: the session's uuid once known; `refit`: fits the terminal to the room the bar
   * leaves it; `writable`: whether this view may answer (a read-only one never shows it). */
  constructor(
    private readonly session: () => string | null,
    private readonly refit: () => void,
    private readonly writable: boolean,
  ) {
    this.askText = h('span', { class: 'ask-text mono', testid: 'ask-text' });
    const answer = (behavior: 'allow' | 'deny') => async () => this.answerAsk(behavior);
    this.askChoices = h('span', { class: 'ask-choices', testid: 'ask-choices', hidden: true });
    // Deny with a reason the agent reads ("do X instead"): a field under the question, opened
    // by its own button so that a plain Deny stays one tap.
    const reason = h('input', {
      class: 'input ask-reason-input',
      type: 'text',
      testid: 'ask-reason-input',
      placeholder: 'why not, or what to do instead',
      'aria-label': 'reason for denying (the agent reads it)',
      enterkeyhint: 'send',
      autocomplete: 'off',
    });
    this.askReasonInput = reason;
    const send = () => {
      const form = this.askReason;
      const msg = reason.value.trim();
      void this.answerAsk('deny', undefined, msg || undefined, form.dataset.for || undefined).then((ok) => {
        if (ok) this.closeReason();
      });
    };
    reason.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.isComposing) {
        e.preventDefault();
        send();
      } else if (e.key === 'Escape') {
        e.preventDefault();
        this.closeReason();
      }
    });
    this.askReason = h(
      'form',
      { class: 'ask-reason', testid: 'ask-reason', hidden: true, onsubmit: (e: Event) => e.preventDefault() },
      reason,
      h(
        'span',
        { class: 'ask-actions' },
        h('button', { class: 'btn small danger', type: 'button', testid: 'ask-reason-send', text: 'Send', onclick: send }),
        h('button', {
          class: 'btn small',
          type: 'button',
          testid: 'ask-reason-cancel',
          text: 'Cancel',
          onclick: () => this.closeReason(),
        }),
      ),
    );
    this.askActions = h(
      'span',
      { class: 'ask-actions' },
      h('button', { class: 'btn small primary', testid: 'ask-allow', text: 'Allow', onclick: answer('allow') }),
      h('button', { class: 'btn small danger', testid: 'ask-deny', text: 'Deny', onclick: answer('deny') }),
      h('button', {
        class: 'btn small',
        testid: 'ask-deny-why',
        text: 'Deny + reason…',
        title: 'deny, with a message the agent reads',
        onclick: () => this.openReason(),
      }),
    );
    this.askLabel = h('span', { class: 'ask-label', text: 'asks permission' });
    this.ask = h(
      'div',
      { class: 'ask', testid: 'ask', role: 'alert', hidden: true },
      this.askLabel,
      this.askText,
      this.askChoices,
      this.askActions,
      this.askReason,
    );
    // A question only the agent's terminal can answer: said where Allow / Deny were (the
    // header's "needs permission" alone left a phone's user with a dialog and no way shown).
    this.askTerm = h(
      'div',
      { class: 'ask ask-term', testid: 'ask-terminal', role: 'status', hidden: true },
      h('span', { class: 'ask-label', text: 'asks in its terminal' }),
      h('span', {
        class: 'ask-text',
        testid: 'ask-terminal-text',
        text: 'answer it there: ↑/↓ to choose, ↵ Enter = its highlighted choice, Esc = no',
      }),
    );
    this.el = h('div', { class: 'ask-host' }, this.ask, this.askTerm);
  }

  /** Shows the question session `s` asks, if any (from the view's `renderInfo`). */
  show(s: SessionInfo): void {
    const asks = this.writable && s.attention === 'needs_permission' && !!s.permission;
    // Nothing outside can answer it (no `permission`): the agent's own dialog holds it.
    const inTerminal = this.writable && s.attention === 'needs_permission' && !s.permission && isAlive(s.state);
    this.askId = s.permission?.id;
    // A reason being typed was for the question it was opened on: another question (or none)
    // closes it, rather than send it to a question it was not written for.
    if (!this.askReason.hidden && (!asks || (this.askReason.dataset.for ?? '') !== (this.askId ?? ''))) {
      this.closeReason();
    }
    if (asks && s.permission) {
      const more = s.permission_queue?.length ?? 0;
      const then = more ? ` (then ${more} more)` : '';
      this.renderAsk(s.permission, then);
    }
    if (this.ask.hidden === asks || this.askTerm.hidden === inTerminal) {
      this.ask.hidden = !asks;
      this.askTerm.hidden = !inTerminal;
      requestAnimationFrame(() => this.refit());
    }
  }

  /** Opens the field for a reason to deny the question shown (kept for that question). */
  private openReason(): void {
    this.askReason.dataset.for = this.askId ?? '';
    this.askReason.hidden = false;
    this.askActions.hidden = true;
    this.askReasonInput.focus();
    requestAnimationFrame(() => this.refit());
  }

  private closeReason(): void {
    if (this.askReason.hidden) return;
    this.askReason.hidden = true;
    this.askActions.hidden = false;
    this.askReasonInput.value = '';
    delete this.askReason.dataset.for;
    requestAnimationFrame(() => this.refit());
  }

  /** Answers the question shown (with an AskUserQuestion's choice: `answers`; a denial with
   * `message`, for the question `question` names when given). True once answered. */
  private async answerAsk(
    behavior: 'allow' | 'deny',
    answers?: Record<string, string>,
    message?: string,
    question?: string,
  ): Promise<boolean> {
    const uuid = this.session();
    if (!uuid) return false;
    this.ask.classList.add('busy');
    try {
      await answerPermission(uuid, behavior, question ?? this.askId, message, answers);
      toast(answers ? 'answered' : behavior === 'allow' ? 'allowed' : message ? 'denied, with your reason' : 'denied');
      return true;
    } catch (e) {
      toast(`not answered: ${(e as Error).message}`, 'error');
      return false;
    } finally {
      this.ask.classList.remove('busy');
    }
  }

  /** An AskUserQuestion's questions (text and option labels); null for any other tool. */
  private static choicesOf(tool: string, input: unknown): { question: string; labels: string[] }[] | null {
    if (tool !== 'AskUserQuestion') return null;
    const qs = (input as { questions?: unknown } | null)?.questions;
    if (!Array.isArray(qs)) return [];
    return qs.map((q) => ({
      question: String((q as { question?: unknown }).question ?? ''),
      labels: (Array.isArray((q as { options?: unknown }).options) ? (q as { options: unknown[] }).options : []).map(
        (o) => String((o as { label?: unknown }).label ?? ''),
      ),
    }));
  }

  /** Shows the question asked: an AskUserQuestion of one question as a button per choice
   * (several questions are answered with `corral answer --choose` or in the terminal), any
   * other tool as what it would run, with Allow / Deny. */
  private renderAsk(p: PermissionAsk, then: string): void {
    const choices = AskBar.choicesOf(p.tool, p.input);
    const allow = this.ask.querySelector('[data-testid="ask-allow"]') as HTMLButtonElement;
    const deny = this.ask.querySelector('[data-testid="ask-deny"]') as HTMLButtonElement;
    const why = this.ask.querySelector('[data-testid="ask-deny-why"]') as HTMLButtonElement;
    allow.hidden = choices != null;
    why.hidden = choices != null;
    setText(deny, choices != null ? 'Dismiss' : 'Deny');
    setText(this.askLabel, choices != null ? 'asks you to choose' : 'asks permission');
    this.askChoices.hidden = choices == null || choices.length !== 1;
    const key = `${p.id ?? ''}`;
    if (choices == null) {
      setText(this.askText, permissionSummary(p.tool, p.input, 4000) + then);
    } else if (choices.length === 1) {
      setText(this.askText, choices[0].question + then);
      if (this.askChoices.dataset.for !== key) {
        this.askChoices.dataset.for = key;
        this.askChoices.replaceChildren(
          ...choices[0].labels.map((label) =>
            h('button', {
              class: 'btn small primary',
              testid: 'ask-choice',
              text: label,
              onclick: () => void this.answerAsk('allow', { [choices[0].question]: label }),
            }),
          ),
        );
      }
    } else {
      setText(
        this.askText,
        `asks ${choices.length} questions: answer with \`corral answer --choose\` or in its terminal${then}`,
      );
    }
  }
}

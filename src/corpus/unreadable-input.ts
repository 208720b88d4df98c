import { UnreadableInputError, type InputLineErrorCode } from '../errors.js';

/** Refused lines, none readable, before the job fails. */
const REFUSED_LIMIT = 1_000;

/**
 * What the user most likely got wrong when every line is refused with this code. Other refusals
 * (TEXT_TOO_LONG, which `--long-lines error` asks for; INVALID_GZIP, one per object) do not count.
 */
const HINTS: Partial<Record<InputLineErrorCode, (textField: string) => string>> = {
  MISSING_TEXT_FIELD: (textField) => `no line has the text field "${textField}": check --text-field, or --format for a text file`,
  INVALID_JSON: () =>
    'no line is JSON: JSON Lines needs one JSON object per line (a .json file holding one document, such as an array, is not JSON Lines); give --format text for text under a JSON Lines name',
  INVALID_UTF8: () => 'no line is text: the input holds binary or compressed data, or text in an encoding other than UTF-8 or UTF-16 with its byte order mark',
};

/**
 * Whether no line of the input could be read: a mistyped `--text-field`, a JSON document under a
 * `.json` name, binary files "completed" with every line in `_errors.jsonl` and `submit --wait`
 * exited 0. The split fails the job (UnreadableInputError) after REFUSED_LIMIT such lines with no
 * line readable, or at the end of a smaller corpus; `plan` warns that it will. A split that stepped
 * over written shards (a restart) has not seen their lines, so it does not judge.
 */
export class UnreadableInput {
  #refused = 0;
  #first: { code: InputLineErrorCode; message: string } | undefined;
  #readable = false;
  #partial = false;

  constructor(private readonly textField: string) {}

  refused(line: { code: InputLineErrorCode; message: string }): void {
    if (!HINTS[line.code]) return;
    this.#refused += 1;
    this.#first ??= line;
  }

  /** A line with text: the input can be read. */
  readable(): void {
    this.#readable = true;
  }

  steppedOver(): void {
    this.#partial = true;
  }

  /** The failure, once it is certain: at the input's end (`ended`), or after REFUSED_LIMIT lines. */
  problem(ended: boolean): UnreadableInputError | undefined {
    if (this.#readable || this.#partial || this.#first === undefined) return undefined;
    if (!ended && this.#refused < REFUSED_LIMIT) return undefined;
    const many = ended ? `all ${this.#refused}` : `the first ${this.#refused}`;
    return new UnreadableInputError(this.#first.code, `${HINTS[this.#first.code]!(this.textField)} (${many} lines were refused; the first: ${this.#first.message})`);
  }
}

import { TextFieldMissingError } from '../src/errors.js';

/** Lines lacking the text field, none having it, before the job fails (a mistyped --text-field). */
const MISSING_TEXT_FIELD_LIMIT = 1_000;

/**
 * Fails the job (TextFieldMissingError) when no line has the text field: a mistyped `--text-field`
 * "completed" with every line in `_errors.jsonl`, exit code 0. After MISSING_TEXT_FIELD_LIMIT such
 * lines with no line embeddable, or at the end of a smaller corpus. A split that stepped over
 * written shards (a restart) has not seen their lines, so it does not judge.
 */
export class TextFieldWatch {
  #missing = 0;
  #first: string | undefined;
  #found = false;
  #partial = false;

  constructor(private readonly field: string) {}

  missing(line: { code: string; message: string }): void {
    if (line.code !== 'MISSING_TEXT_FIELD') return;
    this.#missing += 1;
    this.#first ??= line.message;
    if (this.#missing >= MISSING_TEXT_FIELD_LIMIT) this.atEnd();
  }

  /** A line with text (or a blank one): the field is there, or the input is text. */
  found(): void {
    this.#found = true;
  }

  steppedOver(): void {
    this.#partial = true;
  }

  atEnd(): void {
    if (this.#found || this.#partial || this.#missing === 0) return;
    throw new TextFieldMissingError(
      `no line of the input has the text field "${this.field}": ${this.#missing === MISSING_TEXT_FIELD_LIMIT ? `the first ${this.#missing}` : `all ${this.#missing}`} lacked it (the first: ${this.#first}); check --text-field, or --format for a text file`,
    );
  }
}


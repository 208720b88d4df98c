import { formatCount } from '../format-count.js';
import type { GateState } from './rate-gate.js';

/**
 * One line for `embedq status` and logs: the configured limits (a ceiling), the learned ones
 * (what the provider showed it accepts, remembered for a while) and the rates the gate paces at.
 */
export function describeGateState(state: GateState, model?: string): string {
  const { configured, learned, inForce } = state;
  const learnedLimits = describeLearnedLimits(learned);
  const notes = [
    // A nudge cannot tell a neighbour from a limit measured a little high (at 10 a second, one
    // request is 10%), so the line says what was seen, not who.
    state.shared ? '429s kept coming below it, as when another client shares the account: 10% kept free, probed once a minute' : undefined,
    state.learnedExpiresInMs === undefined ? undefined : describeRemembered(state.learnedExpiresInMs),
  ].filter(Boolean);
  const expires = notes.length > 0 ? ` (${notes.join('; ')})` : '';
  const learnedText = learnedLimits ? `learned ${learnedLimits}${expires}` : 'learned none';
  return (
    `rate gate${model ? ` (${model})` : ''}: configured ${formatCount(configured.requestsPerMinute)} QPM / ${formatCount(configured.tokensPerMinute)} TPM; ${learnedText}; ` +
    `in force ${formatCount(inForce.requestsPerMinute)} QPM / ${formatCount(inForce.tokensPerMinute)} TPM${state.slowStart ? ' (slow start)' : ''}`
  );
}

/** The learned limits, `1,193 QPM / 21,000,000 TPM` or one of them; '' when none is learned. */
export function describeLearnedLimits(learned: GateState['learned']): string {
  return [
    learned.requestsPerMinute === undefined ? undefined : `${formatCount(learned.requestsPerMinute)} QPM`,
    learned.tokensPerMinute === undefined ? undefined : `${formatCount(learned.tokensPerMinute)} TPM`,
  ]
    .filter(Boolean)
    .join(' / ');
}

/** How long a learned limit is still remembered: `remembered 58 min more`. */
export function describeRemembered(expiresInMs: number): string {
  return `remembered ${Math.ceil(expiresInMs / 60_000)} min more`;
}

import { ValidationError } from './image-spec.js';

/** Tags a resource (an image, a network connector) may have, as the reference service allows. */
export const MAX_TAGS = 50;

/**
 * `current` with `added` added or replacing; ValidationError (field Tags) when the result would
 * have more than MAX_TAGS tags. `what` names the resource in the message ("an image").
 */
export function withTags(
  current: Readonly<Record<string, string>>,
  added: Readonly<Record<string, string>>,
  what: string,
): Record<string, string> {
  const merged = { ...current, ...added };
  const count = Object.keys(merged).length;
  if (count > MAX_TAGS)
    throw new ValidationError('Tags', `${what} has at most ${MAX_TAGS} tags; this would make ${count}`);
  return merged;
}

/** `current` without `keys` (absent keys are ignored). */
export function withoutTags(
  current: Readonly<Record<string, string>>,
  keys: readonly string[],
): Record<string, string> {
  const tags = { ...current };
  for (const k of keys) delete tags[k];
  return tags;
}

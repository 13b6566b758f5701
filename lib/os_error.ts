/**
 * What Deno's system errors say: the system's text, then the errno as
 * ` (os error 111)`, sometimes then what was being done (`: open '/x'`).
 * The toolkit's one-line messages keep the text and drop the rest; a few
 * checks need the errno itself.
 *
 * @module
 */

/**
 * `message` without its ` (os error N)` and whatever Deno put after it.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { withoutOsError } from "./os_error.ts";
 *
 * assertEquals(withoutOsError("Address already in use (os error 98)"), "Address already in use");
 * assertEquals(withoutOsError("Is a directory (os error 21): read '/tmp'"), "Is a directory");
 * ```
 */
export function withoutOsError(message: string): string {
  return message.replace(/ \(os error \d+\)(?::.*)?$/, "");
}

/**
 * The errno in a system error's message (`(os error 110)`: 110), or
 * `undefined`, for the errors Deno has no class of its own for.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { osErrorNumber } from "./os_error.ts";
 *
 * assertEquals(osErrorNumber(new Error("Protocol wrong type for socket (os error 91)")), 91);
 * assertEquals(osErrorNumber(new Error("no errno here")), undefined);
 * ```
 */
export function osErrorNumber(error: unknown): number | undefined {
  if (!(error instanceof Error)) return undefined;
  const match = /\(os error (\d+)\)/.exec(error.message);
  return match ? Number(match[1]) : undefined;
}

/**
 * RFC 868 time: seconds since 1900-01-01T00:00Z as a 32-bit number, which
 * wraps in 2036. Used by the time service and client, and by the UDP loop
 * guard (a time reply is recognised by its value).
 *
 * @module
 */

/** Seconds from 1900-01-01T00:00Z (RFC 868's epoch) to 1970-01-01T00:00Z. */
export const RFC868_EPOCH_OFFSET = 2_208_988_800;

const TWO_TO_32 = 2 ** 32;

/**
 * The RFC 868 value for `date`: whole seconds since 1900-01-01T00:00Z,
 * modulo 2^32, so it keeps counting (from 0 again) after
 * 2036-02-07T06:28:16Z.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { rfc868Seconds } from "./rfc868.ts";
 *
 * assertEquals(rfc868Seconds(new Date("1970-01-01T00:00:00Z")), 2208988800);
 * assertEquals(rfc868Seconds(new Date("2036-02-07T06:28:17Z")), 1); // wrapped
 * ```
 */
export function rfc868Seconds(date: Date): number {
  const seconds = Math.floor(date.getTime() / 1000) + RFC868_EPOCH_OFFSET;
  return ((seconds % TWO_TO_32) + TWO_TO_32) % TWO_TO_32;
}

/**
 * The 4 bytes RFC 868 sends for `date`: {@linkcode rfc868Seconds} as a
 * 32-bit big-endian number.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { encodeRfc868 } from "./rfc868.ts";
 *
 * assertEquals(
 *   encodeRfc868(new Date("1970-01-01T00:00:00Z")),
 *   new Uint8Array([0x83, 0xaa, 0x7e, 0x80]), // 2208988800
 * );
 * ```
 */
export function encodeRfc868(date: Date): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, rfc868Seconds(date));
  return bytes;
}

/**
 * The date an RFC 868 value stands for. The 32-bit value repeats every
 * 136 years, so of its candidates (one per era since 1900) this picks the
 * one nearest to `near` (default now), as NTP does: correct past 2036
 * for any clock that is right to within 68 years.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { dateFromRfc868 } from "./rfc868.ts";
 *
 * const near = new Date("2040-01-01T00:00:00Z");
 * assertEquals(dateFromRfc868(1, near), new Date("2036-02-07T06:28:17Z"));
 * ```
 */
export function dateFromRfc868(seconds: number, near: Date = new Date()): Date {
  if (!Number.isInteger(seconds) || seconds < 0 || seconds >= TWO_TO_32) {
    throw new RangeError(`not a 32-bit RFC 868 value: ${seconds}`);
  }
  const nearSeconds = Math.floor(near.getTime() / 1000) + RFC868_EPOCH_OFFSET;
  const era = Math.round((nearSeconds - seconds) / TWO_TO_32);
  return new Date(
    (seconds + era * TWO_TO_32 - RFC868_EPOCH_OFFSET) * 1000,
  );
}

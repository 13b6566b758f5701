/**
 * Quantities as the toolkit's messages print them: durations in seconds,
 * sizes in bytes, KiB and MiB.
 *
 * @module
 */

/**
 * Formats a duration in ms as the toolkit prints it: `2 s`, `0.5 s`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatSeconds } from "./units.ts";
 *
 * assertEquals(formatSeconds(1500), "1.5 s");
 * assertEquals(formatSeconds(2000), "2 s");
 * ```
 */
export function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/**
 * Formats a byte count as the toolkit prints limits: `512 bytes`,
 * `64 KiB`, `1 MiB`, `1.5 MiB`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { formatBytes } from "./units.ts";
 *
 * assertEquals(formatBytes(64 * 1024), "64 KiB");
 * assertEquals(formatBytes(1.5 * 1024 * 1024), "1.5 MiB");
 * assertEquals(formatBytes(100), "100 bytes");
 * ```
 */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of [["MiB", 1024 * 1024], ["KiB", 1024]] as const) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(2))} ${unit}`;
  }
  return `${bytes} bytes`;
}

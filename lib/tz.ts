/**
 * Local time as C sees it. `Date` follows `TZ` through ICU, which knows
 * zone names (`Europe/Paris`, `EST5EDT`) but not POSIX rule strings such as
 * `CET-1CEST,M3.5.0,M10.5.0/3`, `IST-5:30` or `<+0530>-5:30`: for those it
 * silently falls back to UTC, where C's `localtime()` applies the rule.
 * This module parses such strings (POSIX.1 `TZ`, as glibc reads it) and
 * gives the offset from UTC they mean at any instant.
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import { stderrLog } from "./log.ts";

/** One end of daylight saving time in a POSIX `TZ` rule. */
interface TransitionRule {
  /** `J` (1-365, Feb 29 never counted), `N` (0-365), or `M` (month.week.day). */
  kind: "J" | "N" | "M";
  day: number;
  month: number;
  week: number;
  /** Local time of day of the change, in seconds (may be negative or > 24 h). */
  seconds: number;
}

/** A parsed POSIX `TZ` string: standard time and, maybe, daylight saving time. */
export interface PosixTimeZone {
  /** The standard time's name (`CET`, `+0530`). */
  readonly standardName: string;
  /** Seconds to add to UTC for standard time (east positive, unlike `TZ`). */
  readonly standardOffsetSeconds: number;
  /** Daylight saving time's name, if any. */
  readonly daylightName?: string;
  /** Seconds to add to UTC for daylight saving time. */
  readonly daylightOffsetSeconds?: number;
  /** Seconds to add to UTC at `date`. */
  offsetSecondsAt(date: Date): number;
}

const NAME = /^(?:<([A-Za-z0-9+-]{3,})>|([A-Za-z]{3,}))/;
const OFFSET = /^([+-])?(\d{1,3})(?::(\d{1,2}))?(?::(\d{1,2}))?/;
// glibc's default rule when DST is named without one (the US rule).
const DEFAULT_RULES = ",M3.2.0,M11.1.0";

function parseSeconds(
  text: string,
): { seconds: number; rest: string } | null {
  const m = OFFSET.exec(text);
  if (!m) return null;
  const [hours, minutes, seconds] = [m[2], m[3] ?? "0", m[4] ?? "0"].map(
    Number,
  );
  if (hours > 167 || minutes > 59 || seconds > 59) return null;
  const total = hours * 3600 + minutes * 60 + seconds;
  return {
    seconds: m[1] === "-" ? -total : total,
    rest: text.slice(m[0].length),
  };
}

function parseRule(
  text: string,
): { rule: TransitionRule; rest: string } | null {
  let m: RegExpExecArray | null;
  let rule: TransitionRule;
  if ((m = /^M(\d{1,2})\.(\d)\.(\d)/.exec(text))) {
    rule = {
      kind: "M",
      month: Number(m[1]),
      week: Number(m[2]),
      day: Number(m[3]),
      seconds: 7200,
    };
    if (
      rule.month < 1 || rule.month > 12 || rule.week < 1 || rule.week > 5 ||
      rule.day > 6
    ) {
      return null;
    }
  } else if ((m = /^J(\d{1,3})/.exec(text))) {
    rule = { kind: "J", day: Number(m[1]), month: 0, week: 0, seconds: 7200 };
    if (rule.day < 1 || rule.day > 365) return null;
  } else if ((m = /^(\d{1,3})/.exec(text))) {
    rule = { kind: "N", day: Number(m[1]), month: 0, week: 0, seconds: 7200 };
    if (rule.day > 365) return null;
  } else {
    return null;
  }
  let rest = text.slice(m[0].length);
  if (rest.startsWith("/")) {
    const time = parseSeconds(rest.slice(1));
    if (!time) return null;
    rule.seconds = time.seconds;
    rest = time.rest;
  }
  return { rule, rest };
}

function isLeap(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/** Midnight (UTC-based day count, in ms) of the day a rule picks in `year`. */
function ruleDayMs(year: number, rule: TransitionRule): number {
  const january1 = Date.UTC(year, 0, 1);
  const day = 86_400_000;
  switch (rule.kind) {
    case "J":
      // Day 1-365; February 29 is never counted.
      return january1 +
        (rule.day - 1 + (isLeap(year) && rule.day >= 60 ? 1 : 0)) * day;
    case "N":
      return january1 + rule.day * day;
    case "M": {
      const first = Date.UTC(year, rule.month - 1, 1);
      const firstWeekday = new Date(first).getUTCDay();
      let date = 1 + (rule.day - firstWeekday + 7) % 7 + (rule.week - 1) * 7;
      const daysInMonth = new Date(Date.UTC(year, rule.month, 0)).getUTCDate();
      while (date > daysInMonth) date -= 7;
      return Date.UTC(year, rule.month - 1, date);
    }
  }
}

/**
 * Parses a POSIX `TZ` string (`std offset [dst [offset] [,start[/time],end[/time]]]`,
 * names alphabetic or in `<...>`, offsets west-positive as POSIX has them);
 * `null` when `text` is not one (a zone name like `Europe/Paris`, or empty).
 *
 * @example Central European Time, with its daylight saving rule
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parsePosixTimeZone } from "./tz.ts";
 *
 * const zone = parsePosixTimeZone("CET-1CEST,M3.5.0,M10.5.0/3")!;
 * assertEquals(zone.offsetSecondsAt(new Date("2026-01-15T12:00:00Z")), 3600);
 * assertEquals(zone.offsetSecondsAt(new Date("2026-07-15T12:00:00Z")), 7200); // summer
 * assertEquals(parsePosixTimeZone("Europe/Paris"), null); // a name: ICU's job
 * ```
 */
export function parsePosixTimeZone(text: string): PosixTimeZone | null {
  const std = NAME.exec(text);
  if (!std) return null;
  const stdOffset = parseSeconds(text.slice(std[0].length));
  if (!stdOffset) return null;
  const standardName = std[1] ?? std[2];
  const standardOffsetSeconds = -stdOffset.seconds;
  let rest = stdOffset.rest;
  if (rest === "") {
    return {
      standardName,
      standardOffsetSeconds,
      offsetSecondsAt: () => standardOffsetSeconds,
    };
  }
  const dst = NAME.exec(rest);
  if (!dst) return null;
  const daylightName = dst[1] ?? dst[2];
  rest = rest.slice(dst[0].length);
  let daylightOffsetSeconds = standardOffsetSeconds + 3600;
  if (rest !== "" && !rest.startsWith(",")) {
    const offset = parseSeconds(rest);
    if (!offset) return null;
    daylightOffsetSeconds = -offset.seconds;
    rest = offset.rest;
  }
  if (rest === "") rest = DEFAULT_RULES;
  if (!rest.startsWith(",")) return null;
  const start = parseRule(rest.slice(1));
  if (!start || !start.rest.startsWith(",")) return null;
  const end = parseRule(start.rest.slice(1));
  if (!end || end.rest !== "") return null;
  return {
    standardName,
    standardOffsetSeconds,
    daylightName,
    daylightOffsetSeconds,
    offsetSecondsAt(date: Date): number {
      const t = date.getTime();
      // As glibc does: the rules of the UTC year of `date`, and before 1970
      // the changes fall in 1970 (its `compute_change` starts at the epoch).
      const year = date.getUTCFullYear();
      const base = Date.UTC(Math.max(year, 1970), 0, 1) - Date.UTC(year, 0, 1);
      // The start is given in standard time, the end in daylight time.
      const startsAt = base + ruleDayMs(year, start.rule) +
        (start.rule.seconds - standardOffsetSeconds) * 1000;
      const endsAt = base + ruleDayMs(year, end.rule) +
        (end.rule.seconds - daylightOffsetSeconds) * 1000;
      const daylight = startsAt < endsAt
        ? t >= startsAt && t < endsAt
        : !(t >= endsAt && t < startsAt); // Southern hemisphere.
      return daylight ? daylightOffsetSeconds : standardOffsetSeconds;
    },
  };
}

/**
 * The zone C's `localtime()` uses that `Date` does not: the process's
 * `TZ` when it is a POSIX rule string that ICU does not know (ICU then
 * falls back to UTC). `null` when `Date`'s own local time is right, or when
 * `TZ` may not be read (`--allow-env=TZ` is not granted; it is never
 * prompted for, and without it there is no telling whether TZ is set).
 * When `TZ` is set to something neither ICU nor the POSIX rule parser can
 * read, local time is UTC: `warn` gets one line saying so (once per
 * process; default: stderr). A host merely on UTC gets no line.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { posixZoneDateMisses } from "./tz.ts";
 *
 * // No TZ: `Date`'s local time is the system's, as `localtime()`'s is.
 * if (Deno.env.get("TZ") === undefined) assertEquals(posixZoneDateMisses(), null);
 * ```
 */
export function posixZoneDateMisses(
  warn: (line: string) => void = stderrLog,
): PosixTimeZone | null {
  let tz: string | undefined;
  try {
    if (
      Deno.permissions.querySync({ name: "env", variable: "TZ" }).state !==
        "granted"
    ) {
      return null;
    }
    tz = Deno.env.get("TZ");
  } catch {
    return null;
  }
  if (!tz || tz.startsWith(":")) return null;
  const zone = parsePosixTimeZone(tz);
  if (!zone) {
    // Not a rule: ICU's to read (`Europe/Paris`), or no zone at all.
    const icu = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (icu === undefined || /^(Etc\/)?Unknown$/.test(icu)) {
      warnUnreadableTz(tz, warn);
    }
    return null;
  }
  // ICU understood it (`EST5EDT`, `JST-9`): Date is right, and knows history.
  if (Intl.DateTimeFormat().resolvedOptions().timeZone !== "UTC") return null;
  const isPlainUtc = zone.standardOffsetSeconds === 0 &&
    zone.daylightName === undefined;
  return isPlainUtc ? null : zone;
}

let warnedUnreadableTz = false;

/** Says once that `TZ` names no zone, so local time is UTC. */
function warnUnreadableTz(tz: string, warn: (line: string) => void): void {
  if (warnedUnreadableTz) return;
  warnedUnreadableTz = true;
  warn(
    `TZ='${
      escapeControlChars(tz)
    }' is neither a zone name (Europe/Paris) nor a POSIX rule (CET-1CEST,M3.5.0,M10.5.0/3): local time is UTC`,
  );
}

/**
 * The command-line conventions every script keeps, over `parseArgs` from
 * `@std/cli`: each flag's name, type, default and help line live in one
 * table ({@linkcode FlagTable}), from which the parser, the typed values and
 * the `--help` lines all come. `--help` (or `-h`) prints the usage on stdout
 * and exits 0; a usage error is one `error:` line and exit 2; a runtime
 * failure one `error:` line and exit 1; never a stack trace for an expected
 * failure (`runMain`, in `main.ts`, keeps that part).
 *
 * The layer is strict where `parseArgs` is lenient, so every script keeps
 * the same contract: an unknown flag, a missing value, a value given to a
 * switch (`--udp=1`, `--udp true`), a single-valued flag given twice and a
 * bad number are all usage errors naming the flag; `--flag=value` and
 * `--flag value` both work; `--` ends the flags.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";

/**
 * The command line is wrong: the script prints `error: MESSAGE` and exits 2.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { UsageError } from "./cli.ts";
 *
 * assertEquals(new UsageError("missing HOST").name, "UsageError");
 * ```
 */
export class UsageError extends Error {
  /** Builds the error; `message` says what was expected. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * `--help` was given: `runMain` (in `main.ts`) prints `usage` and exits 0.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { HelpRequested, parseCommandLine } from "./cli.ts";
 *
 * const error = assertThrows(
 *   () => parseCommandLine(["-h"], { usage: "usage: x", flags: {} }),
 *   HelpRequested,
 * );
 * assertEquals(error.usage, "usage: x");
 * ```
 */
export class HelpRequested extends Error {
  /** The text to print. */
  readonly usage: string;

  /** Builds the request for `usage`. */
  constructor(usage: string) {
    super("help requested");
    this.name = "HelpRequested";
    this.usage = usage;
  }
}

/**
 * One flag of a {@linkcode FlagTable}: what it takes, how its text becomes a
 * value, its default and its help line. Build one with {@linkcode flag}.
 */
export interface Flag<T = unknown, HasDefault extends boolean = boolean> {
  /** The value's name in the help (`P`, `SECONDS`); absent for a switch. */
  readonly arg?: string;
  /** The help text; `\n` starts an indented continuation line. */
  readonly help: string;
  /** Turns the text given into the value, or throws {@linkcode UsageError}. */
  readonly parse: (text: string, name: string) => T;
  /** Repeatable: the value is the list of every occurrence. */
  readonly multiple?: boolean;
  /** The value when the flag is absent. */
  readonly default?: HasDefault extends true ? T : undefined;
  /** How the help shows the default (`(default ...)`), if it has one. */
  readonly shownDefault?: string;
}

/** Flags by name (without the leading `--`). */
export type FlagTable = Readonly<Record<string, Flag>>;

/** The typed values of a {@linkcode FlagTable}: absent ones are `undefined`. */
export type FlagValues<F extends FlagTable> = {
  -readonly [K in keyof F]: F[K] extends Flag<infer T, infer D>
    ? (D extends true ? T : T | undefined)
    : never;
};

/** A non-negative decimal: digits, with an optional fraction. */
const DECIMAL = /^[0-9]+(\.[0-9]+)?$/;
/**
 * The longest duration a flag takes, 2,147,483 s (24.8 days): the longest
 * a timer waits. `setTimeout` and `setInterval` turn a longer delay into
 * 1 ms (a `--check-interval` of a month checked every millisecond).
 */
const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/**
 * Parses an integer flag value in `[min, max]`, or throws
 * {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { integerFlag, UsageError } from "./cli.ts";
 *
 * assertEquals(integerFlag("--retries", "3", 0, 100), 3);
 * assertThrows(() => integerFlag("--retries", "1e3", 0, 100), UsageError, "--retries");
 * ```
 */
export function integerFlag(
  name: string,
  text: string,
  min: number,
  max: number,
): number {
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected a whole number from ${min} to ${max}`,
    );
  }
  return Number(text);
}

/**
 * Parses a duration in seconds (fractions allowed, as `0.25`) into whole
 * milliseconds, or throws {@linkcode UsageError} naming the flag. A positive
 * value below half a millisecond rounds up to 1 ms, never down to 0 (which
 * flags read as "off"); every duration flag goes through here.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { secondsFlag, UsageError } from "./cli.ts";
 *
 * assertEquals(secondsFlag("--timeout", "1.5"), 1500);
 * assertEquals(secondsFlag("--timeout", "0.0004"), 1);
 * assertEquals(secondsFlag("--timeout", "0"), 0);
 * assertThrows(() => secondsFlag("--check-interval", "2592000"), UsageError, "at most 2147483");
 * ```
 */
export function secondsFlag(name: string, text: string): number {
  if (!DECIMAL.test(text) || Number(text) > MAX_SECONDS) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected a number of seconds${
        DECIMAL.test(text) ? `, at most ${MAX_SECONDS} (24.8 days)` : ""
      }`,
    );
  }
  const seconds = Number(text);
  return seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : 0;
}

/**
 * {@linkcode secondsFlag} for a duration that must not be 0 (a timeout
 * with no "off"): milliseconds, or {@linkcode UsageError} naming the flag.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { positiveSecondsFlag, UsageError } from "./cli.ts";
 *
 * assertEquals(positiveSecondsFlag("0.5", "--timeout"), 500);
 * assertThrows(() => positiveSecondsFlag("0", "--timeout"), UsageError, "more than 0");
 * ```
 */
export function positiveSecondsFlag(text: string, name: string): number {
  const ms = secondsFlag(name, text);
  if (ms === 0) {
    throw new UsageError(
      `invalid value '${text}' for ${name}: expected more than 0 seconds`,
    );
  }
  return ms;
}

function stringValue(text: string, name: string): string {
  if (text === "" || text.includes("\0")) {
    throw new UsageError(`invalid value '${text}' for ${name}: it is empty`);
  }
  return text;
}

function defaultOf<T>(value: T | undefined, shown?: string) {
  return {
    ...(value === undefined ? {} : { default: value }),
    ...(shown === undefined && value === undefined
      ? {}
      : { shownDefault: shown ?? String(value) }),
  };
}

/** The builders in {@linkcode flag}. */
export interface FlagBuilders {
  /** A switch: `true` when given, else `false`. */
  boolean(help: string): Flag<boolean, true>;
  /** A string (never empty). */
  string<D extends string | undefined = undefined>(
    arg: string,
    help: string,
    options?: { default?: D; shown?: string },
  ): Flag<string, undefined extends D ? false : true>;
  /** A repeatable string: every occurrence, in order. */
  list(arg: string, help: string): Flag<string[], false>;
  /** A whole number in `[min, max]`. */
  integer<D extends number | undefined = undefined>(
    arg: string,
    help: string,
    options: { min: number; max: number; default?: D; shown?: string },
  ): Flag<number, undefined extends D ? false : true>;
  /** A duration given in seconds, as milliseconds ({@linkcode secondsFlag}). */
  seconds<D extends number | undefined = undefined>(
    arg: string,
    help: string,
    options?: { default?: D; shown?: string },
  ): Flag<number, undefined extends D ? false : true>;
  /** Any value `parse` turns the text into. */
  custom<T, D extends T | undefined = undefined>(
    arg: string,
    help: string,
    parse: (text: string, name: string) => T,
    options?: { default?: D; shown?: string },
  ): Flag<T, undefined extends D ? false : true>;
}

/**
 * Builders for {@linkcode Flag}s. A string flag refuses an empty value; a
 * number flag its range; a duration is given in seconds and held in
 * milliseconds. `shown` overrides how the help prints the default (a default
 * that another layer applies is shown with `shown` alone).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { flag, parseCommandLine } from "./cli.ts";
 *
 * const FLAGS = {
 *   port: flag.integer("P", "port", { min: 1, max: 65535, default: 13 }),
 *   timeout: flag.seconds("S", "give up after S seconds", { default: 10_000 }),
 *   verbose: flag.boolean("say more"),
 *   header: flag.list("H", "add a header (repeatable)"),
 * };
 * const { values } = parseCommandLine(["--timeout=0.5", "--header", "a", "--header", "b"], {
 *   usage: "",
 *   flags: FLAGS,
 * });
 * assertEquals(values, { port: 13, timeout: 500, verbose: false, header: ["a", "b"] });
 * ```
 */
export const flag: FlagBuilders = {
  /** A switch: `true` when given, else `false`. */
  boolean(help: string): Flag<boolean, true> {
    return { help, parse: () => true, default: false };
  },
  /** A string (never empty). */
  string<D extends string | undefined = undefined>(
    arg: string,
    help: string,
    options: { default?: D; shown?: string } = {},
  ): Flag<string, undefined extends D ? false : true> {
    return {
      arg,
      help,
      parse: stringValue,
      ...defaultOf(options.default, options.shown),
    } as Flag<string, undefined extends D ? false : true>;
  },
  /** A repeatable string: every occurrence, in order. */
  list(arg: string, help: string): Flag<string[], false> {
    return { arg, help, multiple: true, parse: (t, n) => [stringValue(t, n)] };
  },
  /** A whole number in `[min, max]`. */
  integer<D extends number | undefined = undefined>(
    arg: string,
    help: string,
    options: { min: number; max: number; default?: D; shown?: string },
  ): Flag<number, undefined extends D ? false : true> {
    return {
      arg,
      help,
      parse: (text, name) => integerFlag(name, text, options.min, options.max),
      ...defaultOf(options.default, options.shown),
    } as Flag<number, undefined extends D ? false : true>;
  },
  /** A duration given in seconds, as milliseconds ({@linkcode secondsFlag}). */
  seconds<D extends number | undefined = undefined>(
    arg: string,
    help: string,
    options: { default?: D; shown?: string } = {},
  ): Flag<number, undefined extends D ? false : true> {
    return {
      arg,
      help,
      parse: (text, name) => secondsFlag(name, text),
      ...defaultOf(
        options.default,
        options.shown ??
          (options.default === undefined
            ? undefined
            : String(options.default / 1000)),
      ),
    } as Flag<number, undefined extends D ? false : true>;
  },
  /** Any value `parse` turns the text into. */
  custom<T, D extends T | undefined = undefined>(
    arg: string,
    help: string,
    parse: (text: string, name: string) => T,
    options: { default?: D; shown?: string } = {},
  ): Flag<T, undefined extends D ? false : true> {
    return {
      arg,
      help,
      parse,
      ...defaultOf(options.default, options.shown),
    } as Flag<T, undefined extends D ? false : true>;
  },
};

/**
 * The flags of `table` named in `names`, in that order, for a script that
 * takes only those; an unknown flag is then a usage error and the help
 * shows only these.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { flag, pickFlags } from "./cli.ts";
 *
 * const table = { a: flag.boolean("a"), b: flag.boolean("b"), c: flag.boolean("c") };
 * assertEquals(Object.keys(pickFlags(table, "c", "a")), ["c", "a"]);
 * ```
 */
export function pickFlags<F extends FlagTable, K extends keyof F>(
  table: F,
  ...names: K[]
): Pick<F, K> {
  const picked: Partial<Pick<F, K>> = {};
  for (const name of names) picked[name] = table[name];
  return picked as Pick<F, K>;
}

/** Where the help text starts: `  --max-connections N    most ...`. */
const HELP_COLUMN = 25;

/**
 * The `--help` lines of `flags`, one or more each, aligned, then the line
 * for `--help` itself; a default shows as `(default X)` where the help says
 * `{default}`, else at its end.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { flag, flagsHelp } from "./cli.ts";
 *
 * const help = flagsHelp({ port: flag.integer("P", "port", { min: 0, max: 9, default: 7 }) });
 * assertEquals(help.split("\n")[0], "  --port P               port (default 7)");
 * ```
 */
export function flagsHelp(flags: FlagTable): string {
  const lines: string[] = [];
  for (const [name, spec] of Object.entries(flags)) {
    const head = `  --${name}${spec.arg ? ` ${spec.arg}` : ""}`;
    let text = spec.help;
    if (spec.shownDefault !== undefined) {
      const shown = `(default ${spec.shownDefault})`;
      text = text.includes("{default}")
        ? text.replace("{default}", shown)
        : `${text} ${shown}`;
    }
    const [first, ...rest] = text.split("\n");
    lines.push(
      head.length < HELP_COLUMN
        ? head.padEnd(HELP_COLUMN) + first
        : `${head}  ${first}`,
      ...rest.map((line) => " ".repeat(HELP_COLUMN) + line),
    );
  }
  lines.push("  -h, --help".padEnd(HELP_COLUMN) + "print this help and exit");
  return lines.join("\n");
}

/** What a script's command line accepts. */
export interface CommandSpec<F extends FlagTable> {
  /** The full `--help` text (build its flag lines with {@linkcode flagsHelp}). */
  usage: string;
  /** The flags; `--help` and `-h` are added. */
  flags: F;
  /**
   * The positional arguments' names, for messages (`missing HOST`); the
   * first `min` are required. Default none.
   */
  positionals?: readonly string[];
  /** Fewest positional arguments. Default: all of `positionals`. */
  min?: number;
  /** Most positional arguments. Default: `positionals.length`. */
  max?: number;
}

/**
 * Parses `args` strictly against `spec.flags`: `parseArgs` from
 * `@std/cli` does the parsing, after one pass that keeps the contract
 * (see the module doc). Throws {@linkcode HelpRequested} for `--help` or
 * `-h` and {@linkcode UsageError} with a one-line message for anything wrong.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { flag, parseCommandLine, UsageError } from "./cli.ts";
 *
 * const spec = {
 *   usage: "usage: x [--port P] HOST",
 *   flags: { port: flag.integer("P", "port", { min: 1, max: 65535 }) },
 *   positionals: ["HOST"],
 * };
 * const { values, positionals } = parseCommandLine(["--port", "7", "host"], spec);
 * assertEquals([values.port, positionals], [7, ["host"]]);
 * assertThrows(() => parseCommandLine(["--port", "7"], spec), UsageError, "missing argument HOST");
 * assertThrows(
 *   () => parseCommandLine(["--port", "7", "--port", "8", "h"], spec),
 *   UsageError,
 *   "given twice",
 * );
 * ```
 */
export function parseCommandLine<F extends FlagTable>(
  args: readonly string[],
  spec: CommandSpec<F>,
): { values: FlagValues<F>; positionals: string[] } {
  const flags = spec.flags;
  const { tokens, positionals } = checkTokens(args, flags, spec.usage);
  const names = Object.keys(flags);
  const parsed = parseArgs(tokens, {
    string: names.filter((name) => flags[name].arg !== undefined),
    boolean: names.filter((name) => flags[name].arg === undefined),
    collect: names,
  });
  const values: Record<string, unknown> = {};
  for (const name of names) {
    const spec = flags[name];
    const given = parsed[name] as (string | boolean)[] | undefined;
    if (given === undefined || given.length === 0) {
      values[name] = spec.default;
    } else if (spec.multiple) {
      values[name] = given.flatMap((text) =>
        spec.parse(String(text), `--${name}`) as unknown[]
      );
    } else if (given.length > 1) {
      throw new UsageError(
        `option '--${name}' given twice (it takes one value)`,
      );
    } else {
      values[name] = spec.parse(String(given[0]), `--${name}`);
    }
  }
  const named = spec.positionals ?? [];
  const max = spec.max ?? named.length;
  const min = spec.min ?? named.length;
  if (positionals.length > max) {
    throw new UsageError(
      `unexpected argument '${positionals[max]}' (see --help)`,
    );
  }
  if (positionals.length < min) {
    const missing = named[positionals.length] ?? "";
    throw new UsageError(
      `missing argument${missing ? ` ${missing}` : ""} (see --help)`,
    );
  }
  return { values: values as FlagValues<F>, positionals };
}

/**
 * Checks every token before `--` and sorts them: flags in the one form
 * `parseArgs` reads as we do (`--name=value` for a value, `--name` for a
 * switch), positionals as given (`parseArgs` would turn `1e3` into `1000`).
 */
function checkTokens(
  args: readonly string[],
  flags: FlagTable,
  usage: string,
): { tokens: string[]; positionals: string[] } {
  const tokens: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg === "--help" || arg === "-h") throw new HelpRequested(usage);
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const match = /^--([^=]+)(=(.*))?$/s.exec(arg);
    const name = match?.[1];
    const spec = name !== undefined && Object.hasOwn(flags, name)
      ? flags[name]
      : undefined;
    if (spec === undefined) {
      throw new UsageError(
        `unknown option '${arg.split("=")[0]}' (see --help)`,
      );
    }
    const inline = match?.[3];
    if (spec.arg === undefined) {
      if (inline !== undefined) {
        throw new UsageError(`option '--${name}' takes no value`);
      }
      tokens.push(`--${name}`);
      continue;
    }
    if (inline !== undefined) {
      tokens.push(`--${name}=${inline}`);
      continue;
    }
    const next = args[i + 1];
    if (next === undefined) {
      throw new UsageError(`option '--${name}' needs a value`);
    }
    if (next.startsWith("-") && next !== "-") {
      throw new UsageError(
        `option '--${name}' needs a value (write --${name}=-X for one starting with '-')`,
      );
    }
    tokens.push(`--${name}=${next}`);
    i++;
  }
  return { tokens, positionals };
}

/**
 * The flags most clients share: `--port P` (1 to 65535) and
 * `--timeout SECONDS` (held in milliseconds), with the client's own
 * defaults. A zero timeout is refused unless `zeroTimeout` says what 0
 * means (e.g. "wait forever").
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { clientFlags, parseCommandLine } from "./cli.ts";
 *
 * const flags = clientFlags({ port: 13, timeoutMs: 10_000 });
 * const { values } = parseCommandLine(["--timeout", "2"], { usage: "", flags });
 * assertEquals(values, { port: 13, timeout: 2000 });
 * ```
 */
export function clientFlags(defaults: {
  port: number;
  timeoutMs: number;
  /** What `--timeout 0` means; absent, 0 is refused. */
  zeroTimeout?: string;
  /** The help of `--timeout`, if not the usual. */
  timeoutHelp?: string;
}): { port: Flag<number, true>; timeout: Flag<number, true> } {
  const timeoutHelp = defaults.timeoutHelp ??
    "give up when connecting or waiting for data takes\nlonger than S seconds";
  return {
    port: flag.integer("P", "port", {
      min: 1,
      max: 65535,
      default: defaults.port,
    }),
    timeout: flag.custom(
      "S",
      timeoutHelp,
      (text, name) => {
        const ms = secondsFlag(name, text);
        if (ms === 0 && defaults.zeroTimeout === undefined) {
          throw new UsageError(`${name} must be more than 0 seconds`);
        }
        return ms;
      },
      {
        default: defaults.timeoutMs,
        shown: `${defaults.timeoutMs / 1000}${
          defaults.zeroTimeout === undefined
            ? ""
            : `; 0: ${defaults.zeroTimeout}`
        }`,
      },
    ),
  };
}

/**
 * Reading the small files the toolkit is given (certificates, keys, CA
 * certificates, quotations) safely: only a regular file, only up to a
 * stated size, checked before it is opened, so `--cert /dev/zero` or a FIFO
 * given as `--file` is one error line instead of a process that grows
 * without end or hangs. What such a file holds, or its name, reaches an
 * error line through `escapeControlChars` (`escape_control_chars.ts`).
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import { notePermission, permissionHint } from "./main.ts";
import { withoutOsError } from "./os_error.ts";
import { formatBytes } from "./units.ts";

/** The most {@linkcode readSmallFile} reads by default: 1 MiB. */
export const MAX_SMALL_FILE_BYTES = 1024 * 1024;

/** Why {@linkcode readSmallFile} refused or failed. */
export type FileReadFailure =
  | "not-found"
  | "permission"
  | "not-regular"
  | "too-large"
  | "other";

/**
 * A file could not be read: missing, no permission, not a regular file
 * (a FIFO, a device, a directory), or over the size limit. The message is
 * the one line a user sees, naming the file.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { FileReadError, readSmallFile } from "./files.ts";
 *
 * const error = assertThrows(
 *   () => readSmallFile("/dev/null", "certificate file"),
 *   FileReadError,
 *   "cannot read certificate file '/dev/null': a character device, not a regular file",
 * );
 * assertEquals(error.reason, "not-regular");
 * ```
 */
export class FileReadError extends Error {
  /** The file at fault, as given. */
  readonly path: string;
  /** Why it was not read. */
  readonly reason: FileReadFailure;

  /** Builds the error; `message` is the whole line without `error: `. */
  constructor(
    message: string,
    path: string,
    reason: FileReadFailure,
    cause?: unknown,
  ) {
    super(message, { cause });
    this.name = "FileReadError";
    this.path = path;
    this.reason = reason;
  }
}

/** Options for {@linkcode readSmallFile}. */
export interface ReadSmallFileOptions {
  /** The most bytes accepted. Default {@linkcode MAX_SMALL_FILE_BYTES}. */
  maxBytes?: number;
  /**
   * Every file the program needs to read, for the `--allow-read=` a
   * missing permission asks for. Default: this one.
   */
  permissionPaths?: readonly string[];
}

function kindOf(info: Deno.FileInfo): string {
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/**
 * Reads a whole small file, refusing before it opens it anything that is
 * not a regular file (a FIFO would block the open, `/dev/zero` never ends)
 * or is larger than `maxBytes` (default 1 MiB); the read itself stops one
 * byte past the limit, so a file that grows after the check cannot get
 * past it either. Every failure is a {@linkcode FileReadError} whose message
 * names `what` and the file: `cannot read certificate file '/dev/zero': a
 * character device, not a regular file`.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { readSmallFile } from "./files.ts";
 *
 * const path = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(path, "hello");
 * const bytes = readSmallFile(path, "quotation file");
 * Deno.removeSync(path);
 * assertEquals(new TextDecoder().decode(bytes), "hello");
 * ```
 */
export function readSmallFile(
  path: string,
  what: string,
  options: ReadSmallFileOptions = {},
): Uint8Array<ArrayBuffer> {
  const maxBytes = options.maxBytes ?? MAX_SMALL_FILE_BYTES;
  const prefix = `cannot read ${what} '${escapeControlChars(path)}'`;
  const paths = options.permissionPaths ?? [path];
  notePermission("--allow-read", ...paths);
  const refuse = (reason: FileReadFailure, detail: string) =>
    new FileReadError(`${prefix}: ${detail}`, path, reason);
  const check = (info: Deno.FileInfo, size: number) => {
    if (!info.isFile) {
      return refuse("not-regular", `${kindOf(info)}, not a regular file`);
    }
    if (size > maxBytes) {
      return refuse(
        "too-large",
        `larger than ${formatBytes(maxBytes)}, the most accepted`,
      );
    }
  };
  try {
    const info = Deno.statSync(path);
    const refused = check(info, info.size);
    if (refused) throw refused;
    using file = Deno.openSync(path, { read: true });
    const buffer = new Uint8Array(maxBytes + 1);
    let filled = 0;
    while (filled < buffer.byteLength) {
      const n = file.readSync(buffer.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    const changed = check(file.statSync(), filled);
    if (changed) throw changed;
    return buffer.slice(0, filled);
  } catch (error) {
    if (error instanceof FileReadError) throw error;
    if (error instanceof Deno.errors.NotCapable) {
      throw new FileReadError(
        `${prefix}: no read permission (${
          escapeControlChars(permissionHint("--allow-read", paths))
        })`,
        path,
        "permission",
        error,
      );
    }
    if (error instanceof Deno.errors.NotFound) {
      throw new FileReadError(
        `${prefix}: no such file`,
        path,
        "not-found",
        error,
      );
    }
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new FileReadError(
        `${prefix}: permission denied by the file system`,
        path,
        "permission",
        error,
      );
    }
    const reason = withoutOsError((error as Error).message).replace(/:.*$/, "");
    throw new FileReadError(
      `${prefix}: ${escapeControlChars(reason)}`,
      path,
      "other",
      error,
    );
  }
}

/**
 * {@linkcode readSmallFile}, decoded as UTF-8 (an invalid sequence reads as
 * U+FFFD).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { readSmallTextFile } from "./files.ts";
 *
 * const path = Deno.makeTempFileSync();
 * Deno.writeTextFileSync(path, "héllo");
 * const text = readSmallTextFile(path, "quotation file");
 * Deno.removeSync(path);
 * assertEquals(text, "héllo");
 * ```
 */
export function readSmallTextFile(
  path: string,
  what: string,
  options: ReadSmallFileOptions = {},
): string {
  return new TextDecoder().decode(readSmallFile(path, what, options));
}

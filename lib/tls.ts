/**
 * TLS material from files: a PEM certificate chain and private key for
 * servers (`--cert FILE --key FILE`), CA certificates for clients
 * (`--ca FILE`), read once at start with one clear error line when a file
 * is missing, unreadable, or holds no PEM of the right kind.
 *
 * @module
 */

/** A server's certificate chain and private key, both PEM text. */
export interface TlsCertificate {
  /** PEM certificate chain, the server's own certificate first. */
  cert: string;
  /** PEM private key (PKCS#8, PKCS#1 or SEC1). */
  key: string;
}

/**
 * A TLS file is missing, unreadable, or holds no PEM of the kind needed.
 *
 * @example
 * ```ts
 * import { readTlsFiles, TlsFileError } from "./tls.ts";
 *
 * try {
 *   readTlsFiles("/nonexistent/cert.pem", "/nonexistent/key.pem");
 *   throw new Error("read a missing file");
 * } catch (error) {
 *   if (!(error instanceof TlsFileError)) throw error;
 * }
 * ```
 */
export class TlsFileError extends Error {
  /** The file at fault. */
  readonly path: string;

  /** Builds the error for `path`; `cause` is the system's error, if any. */
  constructor(message: string, path: string, cause?: unknown) {
    super(message, { cause });
    this.name = "TlsFileError";
    this.path = path;
  }
}

function readPem(
  path: string,
  what: string,
  marker: RegExp,
  allFiles: string[],
): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    let reason = (error as Error).message.replace(/ \(os error \d+\).*$/, "")
      .replace(/:.*$/, "");
    if (error instanceof Deno.errors.NotCapable) {
      reason = `no read permission (run with --allow-read=${
        allFiles.join(",")
      })`;
    } else if (error instanceof Deno.errors.NotFound) {
      reason = "no such file";
    } else if (error instanceof Deno.errors.PermissionDenied) {
      reason = "permission denied by the file system";
    }
    throw new TlsFileError(
      `cannot read ${what} file '${path}': ${reason}`,
      path,
      error,
    );
  }
  if (!marker.test(text)) {
    throw new TlsFileError(
      `${what} file '${path}' holds no PEM ${what} (expected a -----BEGIN ...----- block)`,
      path,
    );
  }
  return text;
}

const CERTIFICATE_PEM = /-----BEGIN CERTIFICATE-----/;
const KEY_PEM = /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

/**
 * Reads a server's PEM certificate chain and private key; throws
 * {@linkcode TlsFileError} with one line naming the file and what to do
 * (for a missing permission, the exact `--allow-read=` to give).
 *
 * @example
 * ```ts
 * import { readTlsFiles, TlsFileError } from "./tls.ts";
 *
 * try {
 *   readTlsFiles("missing-cert.pem", "missing-key.pem");
 * } catch (error) {
 *   if (!(error instanceof TlsFileError)) throw error;
 *   if (!error.message.includes("missing-cert.pem")) throw error;
 * }
 * ```
 */
export function readTlsFiles(
  certFile: string,
  keyFile: string,
): TlsCertificate {
  const files = [certFile, keyFile];
  const cert = readPem(certFile, "certificate", CERTIFICATE_PEM, files);
  const key = readPem(keyFile, "private key", KEY_PEM, files);
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(key)) {
    throw new TlsFileError(
      `private key file '${keyFile}' is encrypted: make one without a passphrase (openssl ... -noenc)`,
      keyFile,
    );
  }
  return { cert, key };
}

/**
 * Reads a client's CA certificates (PEM, one or more) for `--ca FILE`;
 * throws {@linkcode TlsFileError} like {@linkcode readTlsFiles}.
 *
 * @example
 * ```ts
 * import { readCaFile, TlsFileError } from "./tls.ts";
 *
 * try {
 *   readCaFile("missing-ca.pem");
 * } catch (error) {
 *   if (!(error instanceof TlsFileError)) throw error;
 * }
 * ```
 */
export function readCaFile(caFile: string): string {
  return readPem(caFile, "certificate", CERTIFICATE_PEM, [caFile]);
}

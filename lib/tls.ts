/**
 * TLS material from files: a PEM certificate chain and private key for
 * servers (`--cert FILE --key FILE`) and for clients that show one
 * (`--cert`, `--to-cert`), CA certificates (`--ca FILE`, `--client-ca
 * FILE`), read at start and again on SIGHUP (each a regular file of at
 * most 1 MiB) and checked then (every certificate parses, the key parses
 * and is the certificate's), with one clear error line when a file is missing,
 * unreadable, not a regular file, too large, damaged, or holds no PEM of
 * the right kind.
 *
 * @module
 */

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { escapeControlChars } from "./escape_control_chars.ts";
import { FileReadError, readSmallTextFile } from "./files.ts";

/** A server's certificate chain and private key, both PEM text. */
export interface TlsCertificate {
  /** PEM certificate chain, the server's own certificate first. */
  cert: string;
  /** PEM private key (PKCS#8, PKCS#1 or SEC1). */
  key: string;
}

/**
 * How a TLS server asks for client certificates (`--client-cert`):
 * `required` refuses a client without one, `optional` lets it in (its
 * program sees `SSL_CLIENT_VERIFY=NONE`); either way a certificate sent
 * must chain to the client CAs.
 */
export type ClientCertMode = "required" | "optional";

/**
 * A TLS server's files: its certificate chain and key and, for client
 * certificates, the CAs they must chain to (`--client-ca FILE`, PEM). A
 * server reads them at start and again on SIGHUP.
 */
export interface TlsServerFiles extends TlsCertificate {
  /** PEM CA certificates a client certificate must chain to. */
  clientCa?: string;
}

/**
 * A TLS file is missing, unreadable, or holds no PEM of the kind needed.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { readTlsFiles, TlsFileError } from "./tls.ts";
 *
 * const error = assertThrows(
 *   () => readTlsFiles("/nonexistent/cert.pem", "/nonexistent/key.pem"),
 *   TlsFileError,
 * );
 * assertEquals(error.path, "/nonexistent/cert.pem");
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
    text = readSmallTextFile(path, `${what} file`, {
      permissionPaths: allFiles,
    });
  } catch (error) {
    if (!(error instanceof FileReadError)) throw error;
    throw new TlsFileError(error.message, path, error);
  }
  if (!marker.test(text)) {
    throw new TlsFileError(
      `${what} file '${
        escapeControlChars(path)
      }' holds no PEM ${what} (expected a -----BEGIN ...----- block)`,
      path,
    );
  }
  return text;
}

/** Parses every PEM certificate in `text`; the first is returned. */
function parseCertificates(text: string, path: string): X509Certificate {
  const blocks = text.match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) {
    throw new TlsFileError(
      `certificate file '${
        escapeControlChars(path)
      }' is damaged: no -----END CERTIFICATE----- line; give the certificate as PEM, as openssl writes it`,
      path,
    );
  }
  const parsed = blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      const which = blocks.length === 1
        ? "its certificate"
        : `certificate ${i + 1} of ${blocks.length}`;
      // The parser's own words ("BER error: Unexpected Tag ...") stay in
      // `cause`: they tell a user nothing.
      throw new TlsFileError(
        `certificate file '${
          escapeControlChars(path)
        }' is damaged: ${which} does not parse as X.509; give the certificate as PEM, as openssl writes it`,
        path,
        error,
      );
    }
  });
  return parsed[0];
}

const CERTIFICATE_PEM = /-----BEGIN CERTIFICATE-----/;
const CERTIFICATE_BLOCK =
  /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
const KEY_PEM = /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

/**
 * Reads a server's PEM certificate chain and private key and checks them:
 * each a regular file of at most 1 MiB, every certificate parses, the key
 * parses and belongs to the (first) certificate. Throws
 * {@linkcode TlsFileError} with one line naming the file and what to do
 * (for a missing permission, the exact `--allow-read=` to give; for a key
 * that is not the certificate's, `certificate and key do not match`).
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { readTlsFiles, TlsFileError } from "./tls.ts";
 *
 * assertThrows(
 *   () => readTlsFiles("missing-cert.pem", "missing-key.pem"),
 *   TlsFileError,
 *   "cannot read certificate file 'missing-cert.pem': no such file",
 * );
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
      `private key file '${
        escapeControlChars(keyFile)
      }' is encrypted: make one without a passphrase (openssl ... -noenc)`,
      keyFile,
    );
  }
  const certificate = parseCertificates(cert, certFile);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new TlsFileError(
      `private key file '${
        escapeControlChars(keyFile)
      }' is damaged: its key does not parse; give the key as PEM (PKCS#8, PKCS#1 or SEC1), as openssl writes it`,
      keyFile,
      error,
    );
  }
  // Checked here, once: a key that is not the certificate's otherwise
  // fails every handshake with a misleading "unsupported protocol".
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TlsFileError(
      `certificate and key do not match: the key in '${
        escapeControlChars(keyFile)
      }' is not the one '${
        escapeControlChars(certFile)
      }' was made for; give the key of that certificate`,
      keyFile,
    );
  }
  return { cert, key };
}

/**
 * Reads a client's CA certificates (PEM, one or more) for `--ca FILE`, and
 * checks that each parses, so a damaged file is reported at start rather
 * than after connecting; throws {@linkcode TlsFileError} like
 * {@linkcode readTlsFiles}.
 *
 * @example
 * ```ts
 * import { assertThrows } from "@std/assert";
 * import { readCaFile, TlsFileError } from "./tls.ts";
 *
 * assertThrows(
 *   () => readCaFile("missing-ca.pem"),
 *   TlsFileError,
 *   "cannot read certificate file 'missing-ca.pem': no such file",
 * );
 * ```
 */
export function readCaFile(caFile: string): string {
  const text = readPem(caFile, "certificate", CERTIFICATE_PEM, [caFile]);
  // Damaged PEM is found here, at start, not after connecting.
  parseCertificates(text, caFile);
  return text;
}

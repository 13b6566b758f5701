/**
 * fast-check, for the property tests only. It is imported here by its full
 * npm specifier, not through deno.json's import map: `deno task` resolves
 * every entry of that map before it runs anything, so a test-only npm
 * package there made every task (`deno task echo`) need the npm registry.
 *
 * @module
 */

export { default } from "npm:fast-check@3.23.2";

/**
 * Every shell session in the README and in the scripts' module docs runs
 * as written (see `tests/_docs.ts` for how), and no command is shown
 * outside one: the docs cannot drift from what the commands do.
 */

import { assertEquals, assertGreater } from "@std/assert";
import {
  cannotRunHere,
  moduleDoc,
  notRunReason,
  type Session,
  sessionsIn,
  strayCommands,
  Workspace,
} from "./_docs.ts";
import { repoPath } from "./_helpers.ts";

const FILES = ["README.md"];
for (const dir of ["servers", "clients"]) {
  for (
    const entry of [...Deno.readDirSync(repoPath(dir))].sort((a, b) =>
      a.name < b.name ? -1 : 1
    )
  ) {
    if (entry.name.endsWith(".ts")) FILES.push(`${dir}/${entry.name}`);
  }
}

/** README.md as it is; a script's module doc without its comment stars. */
function docText(file: string): string {
  const text = Deno.readTextFileSync(repoPath(file));
  return file.endsWith(".md") ? text : moduleDoc(text);
}

const SESSIONS: Session[] = FILES.flatMap((file) =>
  sessionsIn(file, docText(file))
);

Deno.test("the README and every script's module doc show their commands in sh sessions only", () => {
  for (const file of FILES) {
    assertEquals(
      strayCommands(docText(file)),
      [],
      `${file} shows commands outside a \`\`\`sh block (the tests run only those)`,
    );
    if (file !== "README.md") {
      assertGreater(
        sessionsIn(file, docText(file)).length,
        0,
        `${file}'s module doc has no \`\`\`sh session`,
      );
    }
  }
});

const WHY_NOT = cannotRunHere();
if (WHY_NOT) console.error(`SKIP: doc sessions: ${WHY_NOT}`);
const space = WHY_NOT ? undefined : await Workspace.create();
if (space) {
  addEventListener("unload", () => {
    Deno.removeSync(space.root, { recursive: true });
  });
}

for (const session of SESSIONS) {
  const reason = WHY_NOT || notRunReason(session);
  if (reason && !WHY_NOT) console.error(`SKIP: ${session.where}: ${reason}`);
  Deno.test({
    name: `doc session ${session.where} runs as shown (${
      session.steps.map((s) => s.command.split(" ").slice(0, 3).join(" "))
        .join("; ")
    })`,
    ignore: reason !== undefined && reason !== "",
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await space!.run(session);
    },
  });
}

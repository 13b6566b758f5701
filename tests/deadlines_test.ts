import { assert, assertEquals } from "@std/assert";
import { setDeadline } from "../lib/deadlines.ts";

const DEADLINES = new URL("../lib/deadlines.ts", import.meta.url).href;

Deno.test("setDeadline() fires each deadline once, in order, none before its time; a cancelled one never", async () => {
  const fired: number[] = [];
  const set: number[] = [];
  const late: string[] = [];
  const last = Promise.withResolvers<void>();
  const deadlines = Array.from({ length: 50 }, (_, i) => {
    set.push(performance.now());
    return setDeadline(30, () => {
      // Elapsed time is what is tested: a lower bound only.
      if (performance.now() - set[i] < 30) late.push(`${i} early`);
      fired.push(i);
      if (i === 49) last.resolve();
    });
  });
  for (let i = 0; i < 50; i += 3) deadlines[i].cancel();
  deadlines[7].cancel(); // twice: nothing more happens
  deadlines[7].cancel();
  await last.promise;
  assertEquals(
    fired,
    Array.from({ length: 50 }, (_, i) => i).filter((i) =>
      i % 3 !== 0 && i !== 7
    ),
  );
  assertEquals(late, []);
});

Deno.test("setDeadline() from a deadline's callback, and after every other was cancelled, still fires", async () => {
  const first = setDeadline(20, () => {});
  first.cancel();
  const fired: string[] = [];
  const done = Promise.withResolvers<void>();
  setDeadline(20, () => {
    fired.push("outer");
    setDeadline(20, () => {
      fired.push("inner");
      done.resolve();
    });
  });
  await done.promise;
  assertEquals(fired, ["outer", "inner"]);
});

Deno.test("setDeadline(): a process whose deadlines were all cancelled exits at once, one with a pending deadline waits for it", async () => {
  const run = async (cancel: boolean) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { setDeadline } from "${DEADLINES}";
const deadline = setDeadline(${
          cancel ? 60_000 : 200
        }, () => console.log("fired"));
${cancel ? "deadline.cancel();" : ""}`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    // Only a guard against hanging: a cancelled 60 s deadline must not
    // hold the process.
    const guard = setTimeout(() => child.kill(), 20_000);
    const output = await child.output();
    clearTimeout(guard);
    assert(output.success, `exit ${output.code}`);
    return new TextDecoder().decode(output.stdout);
  };
  assertEquals(await run(true), "");
  assertEquals(await run(false), "fired\n");
});

Deno.test("setDeadline() longer than a timer holds (30 days) does not fire at once", async () => {
  // setTimeout sets a delay past 2^31 - 1 ms to 1 ms: a 30-day connect
  // timeout fired at once.
  let fired = false;
  const deadline = setDeadline(30 * 86_400_000, () => fired = true);
  // Elapsed time is what is tested: an overflowed timer fires within 1 ms.
  await new Promise((resolve) => setTimeout(resolve, 100));
  deadline.cancel();
  assertEquals(fired, false);
});

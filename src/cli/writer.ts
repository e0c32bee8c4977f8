export const summary = "run the writer service";

export async function run(_argv: string[]): Promise<number> {
  await Promise.resolve();
  throw new Error("proofgate writer: not built yet");
}

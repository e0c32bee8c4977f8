export const summary = "run the sidecar service";

export async function run(_argv: string[]): Promise<number> {
  await Promise.resolve();
  throw new Error("proofgate sidecar: not built yet");
}

/**
 * ANSI colour for the CLI, only where a person reads it: the stream is a terminal and NO_COLOR
 * (no-color.org: set and not empty) is absent. --json output is never coloured.
 */
export function colourWanted(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

const CODES = { red: 31, green: 32, yellow: 33, cyan: 36, bold: 1, dim: 2 } as const;
export type Colour = keyof typeof CODES;

/** A painter that wraps text in one colour, or returns it unchanged when colour is off. */
export function painter(enabled: boolean): (colour: Colour, text: string) => string {
  return (colour, text) => (enabled ? `\x1b[${CODES[colour]}m${text}\x1b[0m` : text);
}

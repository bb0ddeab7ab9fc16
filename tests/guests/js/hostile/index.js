// The limits part of tests/guests/hostile in JavaScript, with the same methods and outputs:
// - `loop`: never returns;
// - `grow N`: allocates N MiB in 1 MiB steps and keeps them; answers `grew N`, or the number of
//   MiB it had when an allocation failed.

const MIB = 1 << 20;

export const handler = {
  call(method, input) {
    const arg = new TextDecoder().decode(input).trim();
    if (method === 'loop') {
      let i = 0;
      for (;;) i = (i + 1) | 0;
    }
    if (method === 'grow') {
      if (!/^[0-9]+$/.test(arg)) throw { code: 'bad-input', message: 'expected a decimal number' };
      const want = Number(arg);
      let chunks = [];
      let failed = false;
      while (chunks.length < want) {
        try {
          chunks.push(new Uint8Array(MIB).fill(0xa5));
        } catch {
          failed = true;
          break;
        }
      }
      const got = chunks.length;
      chunks = null;
      return new TextEncoder().encode(failed ? String(got) : `grew ${got}`);
    }
    throw { code: 'not-found', message: `no method "${method}"` };
  },
};

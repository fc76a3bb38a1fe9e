/** Typings for scripts/test-model.mjs, so TypeScript tests and benchmarks can import it. */

/** One file of the test model: the PyPI wheel it comes from, its member in that wheel, its pinned SHA-256. */
export interface TestModelFile {
  readonly wheel: string;
  readonly member: string;
  readonly sha256: string;
}

/** The files of the test model, keyed by their path relative to the model directory. */
export declare const TEST_MODEL_FILES: Readonly<Record<string, TestModelFile>>;

/** athanor's cache root: ATHANOR_CACHE_DIR, else $XDG_CACHE_HOME/athanor, else ~/.cache/athanor. */
export declare function cacheRoot(): string;

/** Where the test model lives: ATHANOR_TEST_MODEL_DIR when set, else <cache>/test-models/all-MiniLM-L6-v2-int8. */
export declare function testModelDir(): string;

/** Makes the test model directory current (fetching from PyPI when needed) and returns its path; throws with what to install when it cannot. */
export declare function ensureTestModel(options?: { log?: (line: string) => void }): Promise<string>;

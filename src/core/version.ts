declare const LHC_VERSION_DEFINE: string | undefined;

/** package.json's version, put in by the bundler; "dev" when running from src/. */
export const LHC_VERSION: string =
  typeof LHC_VERSION_DEFINE === 'string' ? LHC_VERSION_DEFINE : 'dev';

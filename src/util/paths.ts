// Files the service reads from its own package (examples/, the compiled workers), found
// from where this module is: src/util/ when run from the sources (tests, tsx), or
// dist/src/util/ when run compiled (`npm start`, an installed package).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's directory: the nearest one above this module with a package.json (dist/ has none). */
export const PACKAGE_ROOT = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

function findPackageRoot(from: string): string {
  for (let dir = from; ; ) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${from}`);
    dir = up;
  }
}

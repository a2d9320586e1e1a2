/**
 * Writes the OpenAPI document to docs/openapi.json (`npm run openapi`), formatted by the project's
 * Prettier settings. openapi.test.ts fails when the file is out of date.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { packageRoot } from '../util/package-root.js';
import { openApiJson } from './openapi.js';

const file = join(packageRoot(), 'docs', 'openapi.json');
const config = (await resolveConfig(file)) ?? {};
writeFileSync(file, await format(openApiJson(), { ...config, filepath: file }));
console.log(`wrote ${file}`);

import { openStore, parseLocation } from '../src/storage/locations.js';
import type { ObjectStore } from '../src/storage/object-store.js';
import type { Services } from './services.js';

/** A job's output location as a store plus key prefix (`''` or ending in `/`). */
export function openOutput(output: string, services: Pick<Services, 's3'>): { store: ObjectStore; prefix: string } {
  const location = parseLocation(output);
  return openStore(location, location.kind === 's3' ? services.s3() : undefined);
}

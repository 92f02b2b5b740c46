// The CRIU image layer: schemas (gen/), the file catalogue, reading, writing.

export { IMAGE_TYPES, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, imageTypeByMagic, imageTypeForFile } from './catalog.js';
export type { ImageType } from './catalog.js';
export { decodeImage, encodeImage, imageType } from './codec.js';
export type { Image, ImageEntry } from './codec.js';
export { readImage, readImagesDir } from './reader.js';
export type { ImageFile } from './reader.js';
export { ImageBatch, ImageBuffer, ImageWriter, writeImage, type ImageTarget } from './writer.js';
export { pagemapEntry, pagemapPages, PE_LAZY, PE_PARENT, PE_PRESENT } from './pagemap.js';
export { openImagesDir, type ImagesDir } from './dir.js';

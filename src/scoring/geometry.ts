import { EdgeError, ErrorCodes } from '../errors.js';
import type { ResizeMode } from './manifest.js';

/**
 * Resize geometry: how a frame becomes the model input (stretch, letterbox, center-crop) and how
 * model-input pixels map back to the frame. Preprocessing drives sharp with it; detection
 * decoders use it to report boxes in the pixels of the frame as posted.
 */

/** Affine map from frame pixels to model-input pixels: inputX = frameX * scaleX + offsetX (same for y). */
export interface FrameGeometry {
  frameWidth: number;
  frameHeight: number;
  scaleX: number;
  scaleY: number;
  offsetX: number;
  offsetY: number;
}

/** Everything preprocessing needs to build the model input, plus the affine map back. */
export interface ResizeGeometry extends FrameGeometry {
  /** Size the frame is resized to before padding (letterbox) or cropping (center-crop). */
  resizeWidth: number;
  resizeHeight: number;
  /** Letterbox padding; zero otherwise. */
  padLeft: number;
  padTop: number;
  padRight: number;
  padBottom: number;
  /** Center-crop offsets into the resized image; zero otherwise. */
  cropLeft: number;
  cropTop: number;
}

/**
 * The single source of truth for resize geometry (preprocessing uses it to drive sharp).
 *
 * - stretch: resize to exactly the input size.
 * - letterbox: r = min(inW/fw, inH/fh), resize to round(fw·r) × round(fh·r), pad to the input size
 *   (floor of half the padding on the left/top, the rest right/bottom).
 * - center-crop: r = max(inW/fw, inH/fh), resize to round(fw·r) × round(fh·r), crop the input size
 *   out of the middle (floor of half the excess on the left/top).
 *
 * scaleX/scaleY are the actual resized/frame ratios per axis, so rounding of the resized size does
 * not shift boxes.
 */
export function geometryFor(
  resize: ResizeMode,
  frameWidth: number,
  frameHeight: number,
  inputWidth: number,
  inputHeight: number,
): ResizeGeometry {
  if (!(frameWidth > 0 && frameHeight > 0 && inputWidth > 0 && inputHeight > 0)) {
    throw new EdgeError(
      ErrorCodes.INTERNAL,
      `invalid geometry: frame ${frameWidth}x${frameHeight}, input ${inputWidth}x${inputHeight}`,
    );
  }
  let resizeWidth = inputWidth;
  let resizeHeight = inputHeight;
  let padLeft = 0;
  let padTop = 0;
  let padRight = 0;
  let padBottom = 0;
  let cropLeft = 0;
  let cropTop = 0;
  if (resize === 'letterbox') {
    const r = Math.min(inputWidth / frameWidth, inputHeight / frameHeight);
    resizeWidth = clamp(Math.round(frameWidth * r), 1, inputWidth);
    resizeHeight = clamp(Math.round(frameHeight * r), 1, inputHeight);
    padLeft = Math.floor((inputWidth - resizeWidth) / 2);
    padTop = Math.floor((inputHeight - resizeHeight) / 2);
    padRight = inputWidth - resizeWidth - padLeft;
    padBottom = inputHeight - resizeHeight - padTop;
  } else if (resize === 'center-crop') {
    const r = Math.max(inputWidth / frameWidth, inputHeight / frameHeight);
    resizeWidth = Math.max(Math.round(frameWidth * r), inputWidth);
    resizeHeight = Math.max(Math.round(frameHeight * r), inputHeight);
    cropLeft = Math.floor((resizeWidth - inputWidth) / 2);
    cropTop = Math.floor((resizeHeight - inputHeight) / 2);
  }
  return {
    frameWidth,
    frameHeight,
    scaleX: resizeWidth / frameWidth,
    scaleY: resizeHeight / frameHeight,
    offsetX: padLeft - cropLeft,
    offsetY: padTop - cropTop,
    resizeWidth,
    resizeHeight,
    padLeft,
    padTop,
    padRight,
    padBottom,
    cropLeft,
    cropTop,
  };
}

/** An x in model-input pixels as an x of the frame, clipped to [0, frameWidth]. */
export function frameX(g: FrameGeometry, inputX: number): number {
  return clamp((inputX - g.offsetX) / g.scaleX, 0, g.frameWidth);
}

/**
 * The model input's whole rectangle in frame pixels, not clipped: under letterbox it reaches past
 * the frame by the padding, under center-crop it is the cropped part.
 */
export function inputRectInFrame(
  g: FrameGeometry,
  inputWidth: number,
  inputHeight: number,
): { x: number; y: number; width: number; height: number } {
  return {
    x: -g.offsetX / g.scaleX,
    y: -g.offsetY / g.scaleY,
    width: inputWidth / g.scaleX,
    height: inputHeight / g.scaleY,
  };
}

/** A y in model-input pixels as a y of the frame, clipped to [0, frameHeight]. */
export function frameY(g: FrameGeometry, inputY: number): number {
  return clamp((inputY - g.offsetY) / g.scaleY, 0, g.frameHeight);
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/**
 * Impossible travel by distance: the previous successful sign-in's place and this one's, the time
 * between them, and the speed the customer would have needed. Places carry their uncertainty (a
 * city a few tens of km, a country centroid up to thousands), so the distance that must have been
 * covered is the great-circle distance less both uncertainties and a tolerance: neighbouring places
 * and imprecise IP locations never look impossible.
 */
import type { Place } from './geo.ts';

export interface TravelSettings {
  /** Faster than this is impossible. */
  maxSpeedKmh: number;
  /** Distance always allowed. */
  toleranceKm: number;
  /** Only sign-ins closer in time than this are compared. */
  windowSeconds: number;
}

export interface Travel {
  /** Great-circle distance between the two places, km (rounded). */
  km: number;
  /** Distance that must have been covered at least: km less uncertainties and tolerance. */
  minKm: number;
  hours: number;
  /** Speed needed to cover minKm in the time between the sign-ins, km/h (rounded). */
  speedKmh: number;
  impossible: boolean;
}

const EARTH_RADIUS_KM = 6371.0088;
const rad = (deg: number) => (deg * Math.PI) / 180;

/** Haversine distance in km. */
export function greatCircleKm(a: { lat: number; lon: number }, b: { lat: number; lon: number }): number {
  const dLat = rad(b.lat - a.lat);
  const dLon = rad(b.lon - a.lon);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** Undefined when a place is unknown or the sign-ins are further apart in time than the window. */
export function assessTravel(
  from: { place?: Place | undefined; at: Date },
  to: { place: Place | undefined; at: Date },
  s: TravelSettings,
): Travel | undefined {
  if (!from.place || !to.place) return undefined;
  const seconds = (to.at.getTime() - from.at.getTime()) / 1000;
  if (seconds >= s.windowSeconds) return undefined;
  const km = greatCircleKm(from.place, to.place);
  const minKm = Math.max(0, km - from.place.accuracyKm - to.place.accuracyKm - s.toleranceKm);
  const hours = Math.max(seconds, 0) / 3600;
  // The same instant (or clocks a little out of step) from two places apart: any speed is too fast.
  const speed = minKm === 0 ? 0 : hours > 0 ? minKm / hours : Number.POSITIVE_INFINITY;
  return {
    km: Math.round(km),
    minKm: Math.round(minKm),
    hours: Math.round(hours * 100) / 100,
    speedKmh: Number.isFinite(speed) ? Math.round(speed) : 999_999,
    impossible: speed > s.maxSpeedKmh,
  };
}

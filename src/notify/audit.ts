/** Audit event types written by this module. */
export const NOTIFY_AUDIT = {
  channelAdded: 'notify.channel.added',
  channelReplaced: 'notify.channel.replaced',
  channelRemoved: 'notify.channel.removed',
  settingsChanged: 'notify.settings.changed',
  deadLettered: 'notify.dead_lettered',
  requeued: 'notify.requeued',
  undeliverable: 'notify.undeliverable',
} as const;

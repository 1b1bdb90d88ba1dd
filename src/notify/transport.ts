/**
 * Mail transport: nodemailer over SMTP (pooled connections, STARTTLS required unless configured
 * otherwise). Plain text only, UTF-8, base64 body; nodemailer's file and URL access is off so a
 * message can never pull content from anywhere.
 */
import nodemailer from 'nodemailer';
import type { SmtpConfig } from './config.ts';
import type { Language } from './templates.ts';

export interface MailMessage {
  to: string;
  subject: string;
  text: string;
  language: Language;
  /** `<…@…>`, stable per outbox row so a resent message can be recognised. */
  messageId: string;
}

/** What the worker sends e-mail through. send() rejects on any failure (nodemailer's errors). */
export interface MailTransport {
  send(message: MailMessage): Promise<void>;
  close(): void;
}

export interface SmtpTransportOptions extends SmtpConfig {
  from: { address: string; name?: string | undefined };
  /** PEM of extra CAs to trust (the contents of smtp.caFile). */
  ca?: string | undefined;
}

export function createSmtpTransport(o: SmtpTransportOptions): MailTransport {
  const transporter = nodemailer.createTransport({
    pool: true,
    maxConnections: o.maxConnections,
    host: o.host,
    port: o.port,
    secure: o.security === 'tls',
    requireTLS: o.security === 'starttls',
    ignoreTLS: o.security === 'none',
    ...(o.auth ? { auth: { user: o.auth.user, pass: o.auth.pass } } : {}),
    ...(o.clientName ? { name: o.clientName } : {}),
    tls: { minVersion: 'TLSv1.2', ...(o.ca ? { ca: o.ca } : {}) },
    connectionTimeout: o.timeoutMs,
    greetingTimeout: o.timeoutMs,
    socketTimeout: o.timeoutMs,
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
  });
  return {
    async send(m) {
      await transporter.sendMail({
        from: o.from.name ? { name: o.from.name, address: o.from.address } : o.from.address,
        to: m.to,
        subject: m.subject,
        text: m.text,
        textEncoding: 'base64',
        messageId: m.messageId,
        headers: {
          // RFC 3834: no auto-replies or out-of-office answers to these.
          'Auto-Submitted': 'auto-generated',
          'X-Auto-Response-Suppress': 'All',
          'Content-Language': m.language,
        },
      });
    },
    close() {
      transporter.close();
    },
  };
}

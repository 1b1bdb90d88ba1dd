/**
 * The bank account a customer's withdrawals are paid to. A new one replaces the old at once but
 * is held for the policy's cool-off: no money goes to it before `holdUntil` (JSDA IV.1.(2)①:
 * attackers change the withdrawal account first, then withdraw).
 */
import { randomUUID } from 'node:crypto';
import { type Db, lockCustomer, type Queryable } from '../db/index.ts';
import type { BankAccountDetails } from './approvals/operationDetails.ts';

export interface WithdrawalAccount extends BankAccountDetails {
  id: string;
  registeredAt: Date;
  holdUntil: Date;
}

interface Row {
  id: string;
  bank_code: string;
  branch_code: string;
  account_type: BankAccountDetails['accountType'];
  account_number: string;
  holder_name: string;
  bank_name: string | null;
  registered_at: Date;
  hold_until: Date;
}

export async function activeWithdrawalAccount(
  db: Queryable,
  customerId: string,
): Promise<WithdrawalAccount | undefined> {
  const r = await db.query<Row>(
    `SELECT id, bank_code, branch_code, account_type, account_number, holder_name, bank_name, registered_at, hold_until
     FROM withdrawal_accounts WHERE customer_id = $1 AND status = 'active'`,
    [customerId],
  );
  const a = r.rows[0];
  return a
    ? {
        id: a.id,
        bankCode: a.bank_code,
        bankName: a.bank_name ?? '',
        branchCode: a.branch_code,
        accountType: a.account_type,
        accountNumber: a.account_number,
        holderName: a.holder_name,
        registeredAt: a.registered_at,
        holdUntil: a.hold_until,
      }
    : undefined;
}

/** The same bank account (bank, branch, type, number): names are compared separately. */
export const sameBankAccount = (a: BankAccountDetails, b: BankAccountDetails) =>
  a.bankCode === b.bankCode &&
  a.branchCode === b.branchCode &&
  a.accountType === b.accountType &&
  a.accountNumber === b.accountNumber;

/** Replaces the active withdrawal account; the new one is held for `holdSeconds`. */
export async function registerWithdrawalAccount(
  db: Db,
  customerId: string,
  account: BankAccountDetails,
  holdSeconds: number,
): Promise<WithdrawalAccount> {
  // Under the customer's row lock, as every change a money decision reads (src/db/customerLock.ts).
  return db.transaction(async (tx) => {
    await lockCustomer(tx, customerId);
    return replaceWithdrawalAccount(tx, customerId, account, holdSeconds);
  });
}

/**
 * registerWithdrawalAccount inside the caller's transaction (the decision that allows the change
 * records it, the new account and its notice together).
 */
export async function replaceWithdrawalAccount(
  tx: Queryable,
  customerId: string,
  account: BankAccountDetails,
  holdSeconds: number,
): Promise<WithdrawalAccount> {
  await tx.query(
    `UPDATE withdrawal_accounts SET status = 'replaced', replaced_at = now() WHERE customer_id = $1 AND status = 'active'`,
    [customerId],
  );
  const id = `wa_${randomUUID()}`;
  const r = await tx.query<{ registered_at: Date; hold_until: Date }>(
    `INSERT INTO withdrawal_accounts (id, customer_id, bank_code, bank_name, branch_code, account_type, account_number,
       holder_name, status, hold_until)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', now() + make_interval(secs => $9))
     RETURNING registered_at, hold_until`,
    [
      id,
      customerId,
      account.bankCode,
      account.bankName,
      account.branchCode,
      account.accountType,
      account.accountNumber,
      account.holderName,
      holdSeconds,
    ],
  );
  return { ...account, id, registeredAt: r.rows[0]!.registered_at, holdUntil: r.rows[0]!.hold_until };
}

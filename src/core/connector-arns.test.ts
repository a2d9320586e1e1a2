import { describe, expect, it } from 'vitest';
import {
  ingressModeOf,
  isManagedConnectorName,
  managedConnectorArn,
  parseConnectorArn,
  userConnectorArn,
} from './connector-arns.js';

describe('connector ARNs', () => {
  it('formats managed and user ARNs', () => {
    expect(managedConnectorArn('local', 'INTERNET_EGRESS')).toBe(
      'arn:hearth:lambda:local:hearth:network-connector:INTERNET_EGRESS',
    );
    expect(userConnectorArn('eu-1', '123456789012', 'db')).toBe(
      'arn:hearth:lambda:eu-1:123456789012:network-connector:db',
    );
  });

  it('parses the Hearth form, the AWS form of managed connectors, and user ARNs', () => {
    expect(parseConnectorArn('arn:hearth:lambda:local:hearth:network-connector:HTTP_INGRESS')).toEqual({
      kind: 'managed',
      name: 'HTTP_INGRESS',
    });
    expect(
      parseConnectorArn('arn:aws:lambda:us-east-1:aws:network-connector:aws-network-connector:NO_INGRESS'),
    ).toEqual({ kind: 'managed', name: 'NO_INGRESS' });
    expect(parseConnectorArn('arn:hearth:lambda:local:hearth:network-connector:SHELL_INGRESS')).toEqual({
      kind: 'managed',
      name: 'SHELL_INGRESS',
    });
    expect(parseConnectorArn('arn:hearth:lambda:local:000000000000:network-connector:db-1')).toEqual({
      kind: 'user',
      name: 'db-1',
      region: 'local',
      accountId: '000000000000',
    });
  });

  it('recognises nothing else', () => {
    for (const text of [
      'HTTP_INGRESS',
      'arn:hearth:lambda:local:000000000000:microvm-image:x',
      'arn:aws:lambda:us-east-1:aws:network-connector:HTTP_INGRESS',
      'arn:hearth:lambda:local:hearth:network-connector:a:b',
      'arn:hearth:lambda::hearth:network-connector:X',
      '',
    ])
      expect(parseConnectorArn(text), text).toBeUndefined();
  });

  it('knows the managed names', () => {
    expect(
      ['ALL_INGRESS', 'HTTP_INGRESS', 'NO_INGRESS', 'INTERNET_EGRESS'].every(isManagedConnectorName),
    ).toBe(true);
    expect(isManagedConnectorName('SHELL_INGRESS')).toBe(false);
    expect(isManagedConnectorName('http_ingress')).toBe(false);
  });
});

describe('ingressModeOf', () => {
  const arn = (n: 'ALL_INGRESS' | 'HTTP_INGRESS' | 'NO_INGRESS') => managedConnectorArn('local', n);
  const aws = (n: string) => `arn:aws:lambda:us-west-2:aws:network-connector:aws-network-connector:${n}`;

  it('is http by default and with HTTP_INGRESS', () => {
    expect(ingressModeOf([])).toBe('http');
    expect(ingressModeOf([arn('HTTP_INGRESS')])).toBe('http');
    expect(ingressModeOf(['junk', 'arn:hearth:lambda:local:1:network-connector:x'])).toBe('http');
  });

  it('is all with ALL_INGRESS, alone or with HTTP_INGRESS, in either ARN form', () => {
    expect(ingressModeOf([arn('ALL_INGRESS')])).toBe('all');
    expect(ingressModeOf([arn('HTTP_INGRESS'), aws('ALL_INGRESS')])).toBe('all');
  });

  it('is none with NO_INGRESS, whatever else is listed', () => {
    expect(ingressModeOf([arn('NO_INGRESS')])).toBe('none');
    expect(ingressModeOf([aws('NO_INGRESS')])).toBe('none');
    expect(ingressModeOf([arn('ALL_INGRESS'), arn('NO_INGRESS')])).toBe('none');
  });
});
